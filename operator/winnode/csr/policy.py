"""Which CertificateSigningRequests winnode approves: only those of a node it configured, and only
when every field is exactly what that node's kubelet would ask for.

A kubelet asks twice. First a client certificate (signer kube-apiserver-client-kubelet), sent with
the bootstrap token we minted for that node, before its Node object exists. Then a serving
certificate (signer kubelet-serving), sent as the node itself, naming the host's addresses. An
attacker holding a leaked bootstrap token could ask for another node's identity, or for a serving
certificate that covers someone else's address; every check below closes one such door. A CSR that
is not ours is left alone (another approver may own it); one that claims our node but fails a check
is also left unapproved and reported, never denied, so an admin can still inspect and act on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from winnode.csr.parse import CLIENT_SIGNER, SERVING_SIGNER, CsrFacts, normalize_ip

NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
BOOTSTRAP_USER_PREFIX = "system:bootstrap:"

_CLIENT_USAGES_REQUIRED = frozenset({"client auth"})
_SERVING_USAGES_REQUIRED = frozenset({"server auth"})
_ALWAYS_ALLOWED_USAGES = frozenset({"digital signature"})
# Key encipherment only makes sense for RSA keys; kubelet asks for it only then.
_RSA_ONLY_USAGES = frozenset({"key encipherment"})


class Decision(StrEnum):
    APPROVE = "Approve"
    NOT_OURS = "NotOurs"  # another signer, another node: someone else's business
    REJECT = "Reject"  # claims one of our nodes but something is off: leave it and tell the admin
    ALREADY_DONE = "AlreadyDone"


@dataclass
class ExpectedHost:
    """What the CSR approver knows of a node we configure (from its host facts)."""

    windows_node: str
    uid: str
    addresses: frozenset[str]
    hostnames: frozenset[str]


@dataclass(frozen=True)
class ExpectedNode:
    """What we know of a node we configured."""

    node_name: str
    bootstrap_token_id: str | None  # None once the token has been revoked
    addresses: frozenset[str]  # IPs the host reported (facts) plus spec.address if it is an IP
    hostnames: frozenset[str]  # host name and node name, lower-case
    node_exists: bool


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str

    @property
    def approve(self) -> bool:
        return self.decision is Decision.APPROVE


def node_name_of(csr: CsrFacts) -> str | None:
    """The node a kubelet CSR claims to be, or None when it is not a kubelet CSR at all."""
    if csr.signer_name not in (CLIENT_SIGNER, SERVING_SIGNER):
        return None
    if csr.common_name is None or not csr.common_name.startswith(NODE_USER_PREFIX):
        return None
    return csr.common_name[len(NODE_USER_PREFIX) :]


def _usages_problem(csr: CsrFacts, required: frozenset[str]) -> str | None:
    allowed = required | _ALWAYS_ALLOWED_USAGES
    if csr.key_type == "rsa":
        allowed |= _RSA_ONLY_USAGES
    missing = required - csr.usages
    if missing:
        return f"usages lack {sorted(missing)}"
    extra = csr.usages - allowed
    if extra:
        return f"usages {sorted(extra)} are not ones a kubelet asks for"
    return None


# A CSR someone has already approved or denied, or whose signing failed: nothing left to decide.
DECIDED = Verdict(Decision.ALREADY_DONE, "already approved, denied or failed")


def judge(csr: CsrFacts, expected: ExpectedNode | None) -> Verdict:
    """Decide on one CSR. `expected` is the node the CSR's CN names, if winnode manages it."""
    if csr.approved or csr.denied_or_failed:
        return DECIDED
    claimed = node_name_of(csr)
    if claimed is None:
        return Verdict(Decision.NOT_OURS, "not a kubelet CSR")
    if expected is None or expected.node_name != claimed:
        return Verdict(Decision.NOT_OURS, f"node {claimed!r} is not managed by winnode")

    def reject(why: str) -> Verdict:
        return Verdict(Decision.REJECT, f"CSR {csr.name} for node {claimed}: {why}")

    if csr.organizations != (NODES_GROUP,):
        return reject(f"subject organization must be exactly [{NODES_GROUP}], got {list(csr.organizations)}")

    if csr.signer_name == CLIENT_SIGNER:
        if expected.node_exists:
            return reject("a client certificate is only approved before the Node exists (first join)")
        token_id = expected.bootstrap_token_id
        if token_id is None:
            return reject("no bootstrap token is outstanding for this node")
        if csr.username != BOOTSTRAP_USER_PREFIX + token_id:
            return reject("it was not requested with the bootstrap token issued for this node")
        if csr.dns_names or csr.ip_addresses or csr.other_sans:
            return reject("a client certificate must not carry subject alternative names")
        problem = _usages_problem(csr, _CLIENT_USAGES_REQUIRED)
        return (
            reject(problem) if problem else Verdict(Decision.APPROVE, "client certificate of a joining node")
        )

    # Serving certificate.
    if not expected.node_exists:
        return reject("a serving certificate is only approved once the Node is registered")
    if csr.username != NODE_USER_PREFIX + claimed or NODES_GROUP not in csr.groups:
        return reject("a serving certificate must be requested by the node itself")
    if csr.other_sans:
        return reject("email, URI or other SAN kinds are not allowed")
    if not csr.dns_names and not csr.ip_addresses:
        return reject("a serving certificate must name the host's addresses")
    unknown_ips = {ip for ip in csr.ip_addresses if normalize_ip(ip) not in expected.addresses}
    if unknown_ips:
        return reject(f"IP SANs {sorted(unknown_ips)} are not addresses this host reported")
    unknown_dns = {d for d in csr.dns_names if d.lower() not in expected.hostnames}
    if unknown_dns:
        return reject(f"DNS SANs {sorted(unknown_dns)} are not this host's names")
    problem = _usages_problem(csr, _SERVING_USAGES_REQUIRED)
    return (
        reject(problem) if problem else Verdict(Decision.APPROVE, "serving certificate of a registered node")
    )
