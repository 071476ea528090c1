"""An emulated kubelet: what a Windows node's kubelet does through the Kubernetes API, without Windows.

    kubelet = EmulatedKubelet(KubeletConfig(node_name="win-01", bootstrap_kubeconfig=text, ...))
    await kubelet.start()     # returns at once; the kubelet runs as tasks of the caller's event loop
    ...                       # someone approves its client CSR; the Node registers and turns Ready
    await kubelet.stop()      # heartbeats stop; kcm marks the Node NotReady after its grace period

The operator's join, upgrade and drain logic meets a real apiserver through it, so it does what
kubelet v1.37 does on the wire, with the same identities and the same limits:

- TLS bootstrap: with the bootstrap token of its kubeconfig it asks for a client certificate
  (signer kube-apiserver-client-kubelet, ECDSA P-256, CN system:node:<name>, O system:nodes, the CSR
  named from a digest of key, subject and usages so that a restart finds its own request again) and
  waits until someone approves it and kcm signs it. Key and certificate are kept in `state_dir`; a
  later start reuses them while they are valid.
- As the node (client certificate, so the Node authorizer and NodeRestriction apply) it registers the
  Node, or updates the default labels and status of one that exists, renews its Lease in
  kube-node-lease every heartbeat and keeps the node status current.
- It asks for a serving certificate (signer kubelet-serving, SANs = the node's addresses) that nobody
  approves automatically, and keeps running while it is pending.
- Pods bound to the node (watched with a spec.nodeName field selector) are reported Running and Ready;
  pods being deleted or evicted get a terminal status and are deleted with grace period 0 and a UID
  precondition, as kubelet's status manager does.

One kubelet holds a few tasks and one aiohttp session, no thread: hundreds run in one process. Its
state directory mirrors kubelet's: pki/kubelet-client-current.pem, pki/kubelet-client.key.tmp (the key
of a client CSR still pending), pki/kubelet-server-current.pem and a kubelet.conf pointing at them.

The package follows kubelet's own seams: `config` (what it reads before it starts), `certs` (keys,
CSRs, stored bundles), `objects` (the Node and pod statuses it writes), `api` (its HTTP client) and
`agent` (the running kubelet).
"""

from __future__ import annotations

from .agent import EmulatedKubelet, KubeletState
from .api import ApiError, TransportError
from .certs import client_csr_name, make_client_csr, make_serving_csr
from .config import (
    ClusterAccess,
    KubeletConfig,
    KubeletConfigError,
    KubeletFailedError,
    parse_kubeconfig,
    parse_taint,
    validate_node_labels,
)

__all__ = [
    "ApiError",
    "ClusterAccess",
    "EmulatedKubelet",
    "KubeletConfig",
    "KubeletConfigError",
    "KubeletFailedError",
    "KubeletState",
    "TransportError",
    "client_csr_name",
    "make_client_csr",
    "make_serving_csr",
    "parse_kubeconfig",
    "parse_taint",
    "validate_node_labels",
]
