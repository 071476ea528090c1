"""Every wait, poll interval and backoff of winnode in one place, so they can be read side by side.

Values are seconds. A "bounded poll" is `interval` between tries until `deadline` has passed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Poll:
    interval: float
    deadline: float

    async def attempts(self, wait: Callable[[float], Awaitable[object]] | None = None) -> AsyncIterator[int]:
        """The tries of a bounded poll, numbered from 1: the first at once, then one every `interval`;
        it ends after the first try that finishes once `deadline` has passed. The loop body returns
        (or raises) on success; the code after the loop handles the timeout.

            async for _ in timeouts.NODE_JOIN.attempts():
                if await ready():
                    return
            raise StepFailure(...)

        `wait(seconds)` replaces the sleep between tries when something can end it early (a local event
        the caller waits on); it must return within `seconds`.
        """
        ends = time.monotonic() + self.deadline
        number = 0
        while True:
            number += 1
            yield number
            if time.monotonic() >= ends:
                return
            if wait is None:
                await asyncio.sleep(self.interval)
            else:
                await wait(min(self.interval, max(0.0, ends - time.monotonic())))


# Local control plane (winnode.testing.cluster).
# Loopback probes cost well under a millisecond; a short interval matters because start-up is
# four waits in a row.
CONTROL_PLANE_READY = Poll(interval=0.1, deadline=90.0)
CONTROL_PLANE_STOP_GRACE = 10.0
# One HTTP probe of a control-plane health endpoint; a stuck socket must not eat the whole deadline.
CONTROL_PLANE_PROBE = 2.0
# kcm marks a Node NotReady this long after its last heartbeat (upstream default 50 s): short, so
# tests see a dead kubelet quickly. The kcm process gets HTTP/2 health-check timeouts below it.
NODE_MONITOR_GRACE_PERIOD = 20.0
NODE_MONITOR_PERIOD = 2.0
# Default bound of one `ControlPlane.kubectl(...)` call.
KUBECTL = 60.0
# Integration checks against the local control plane (CSR signed, namespace gone, ...).
CONTROL_PLANE_CHECK = Poll(interval=0.25, deadline=60.0)

# Admission webhook (winnode.admission).
# One call to the apiserver from the webhook (Secret, webhook configuration, Node list).
WEBHOOK_API_REQUEST = 10.0
# The apiserver ends a Node watch after this long; we resume from the last resourceVersion.
NODE_WATCH_SERVER_TIMEOUT = 300.0
# Backoff between failed list/watch attempts of Nodes (doubles from interval up to deadline).
NODE_WATCH_BACKOFF = Poll(interval=0.5, deadline=30.0)
# How often a replica looks at its serving certificate (and the Secret the replicas share); shortened
# to a twentieth of the certificate lifetime when that is shorter (tests use lifetimes of seconds).
WEBHOOK_CERT_CHECK = 60.0
# A new CA sits in the caBundle this long before certificates it signs are served: the apiserver
# reloads a webhook configuration within a second or two, this leaves room. Capped at a twentieth
# of the CA lifetime.
WEBHOOK_CA_PROPAGATION = 30.0
# How often certificate files from cert-manager (--cert-dir) are checked for a renewal.
WEBHOOK_CERT_FILE_POLL = 10.0
# On SIGTERM: not ready at once, keep answering this long while endpoints drop the replica.
WEBHOOK_SHUTDOWN_GRACE = 5.0
# A local `winnode webhook` process (winnode.testing.admission): until /readyz answers 200, and until
# the apiserver acts on a new webhook configuration or policy.
WEBHOOK_START = Poll(interval=0.1, deadline=30.0)
WEBHOOK_EFFECTIVE = Poll(interval=0.2, deadline=30.0)
WEBHOOK_STOP_GRACE = 10.0

# Leader election of `winnode run` on a coordination.k8s.io Lease (client-go leaderelection defaults).
# A standby takes the Lease this long after it last saw the holder renew it ...
LEADER_LEASE_DURATION = 15.0
# ... the holder gives up (stops reconciling, exits) when it could not renew for this long: shorter
# than the lease duration, so it has stopped before anyone else may take over ...
LEADER_RENEW_DEADLINE = 10.0
# ... and every candidate tries to acquire or renew this often.
LEADER_RETRY_PERIOD = 2.0
# After losing the Lease the reconciler gets this long to stop before it is cancelled outright ...
LEADER_STOP_GRACE = 3.0
# ... and on SIGTERM this long (handlers finish their current call), before the Lease is released.
LEADER_SHUTDOWN_GRACE = 30.0

# Health endpoints of `winnode run` (winnode.process.health).
# The event loop ticks every HEALTH_TICK; /healthz fails when the last tick is older than HEALTH_LOOP_STALL.
HEALTH_TICK = 1.0
HEALTH_LOOP_STALL = 15.0
# A kopf watch stream that is gone (its task ended) for this long makes /healthz fail.
HEALTH_WATCH_GRACE = 30.0
# The webhook's Windows-node watch: /healthz fails when it has neither listed nor received anything
# (event, bookmark, or the server's regular end of a watch) for this long.
NODE_WATCH_STALE = 2 * NODE_WATCH_SERVER_TIMEOUT + 60.0

# Kubernetes edge (winnode.kube).
# One request to the apiserver (kube/api.py), waiting for a pooled connection included; without a bound a
# half-open connection would stall its caller forever.
KUBE_REQUEST = 30.0
# Between drain passes: evicted pods need their grace period, and a PDB-blocked eviction is retried
# (kubectl drain waits 5 s after a 429).
DRAIN_PASS_INTERVAL = 2.0
# Repeats of the same Event (object, reason, message) within this window bump count/lastTimestamp of
# one Event instead of creating another; the value client-go's event correlator uses.
EVENT_AGGREGATION_WINDOW = 600.0
# Optimistic-concurrency retries (409 Conflict) of a read-modify-write on a Node.
NODE_UPDATE_CONFLICT = Poll(interval=0.1, deadline=10.0)

# WindowsNode lifecycle (winnode.lifecycle, winnode.handlers).
# Retry of a failed configure or deconfigure step: starts at `interval`, doubles on each retry up to
# `deadline` (the longest pause between two tries).
RECONCILE_BACKOFF = Poll(interval=2.0, deadline=300.0)
# Retry while an admin has to act (auth refused, preflight failed, checksum mismatch, Secret missing):
# no point hammering the host, but a fix should be picked up quickly.
ADMIN_ACTION_BACKOFF = Poll(interval=5.0, deadline=60.0)
# Waiting for the Node to register (kubelet TLS bootstrap + CSR approval) and to report Ready with
# the expected kubeletVersion; one configure attempt waits this long, then retries.
NODE_JOIN = Poll(interval=1.0, deadline=120.0)
# Those waits also judge every pending kubelet CSR, as a fallback for the CSR watch (which judges each
# CSR as it comes): one listing of all CSRs at most this often for the whole operator, not one per
# waiting node per second (a joining fleet makes two CSRs per node).
CSR_SWEEP_SPACING = 5.0
# Download of <file>.sha256 from the artifacts mirror by the operator itself.
CHECKSUM_FETCH = 20.0
# The apiserver's version (/version) is read once per this period.
APISERVER_VERSION_CACHE = 300.0
# Bootstrap token lifetime; the token is revoked as soon as the node holds its client certificate.
BOOTSTRAP_TOKEN_TTL = 3600.0
# kube-proxy's ServiceAccount token (kube/proxy_identity.py): its lifetime, and how much of it may be
# left before the drift check replaces it (well over one drift interval, so it never runs out).
KUBE_PROXY_TOKEN_TTL = 24 * 3600.0
KUBE_PROXY_TOKEN_RENEW_BEFORE = 8 * 3600.0
# The emulated kube-proxy's pause before it lists again after a broken watch.
KUBE_PROXY_RETRY = 1.0
# Drift check of a Ready node: every Settings.drift_interval_s plus up to DRIFT_JITTER of it at
# random, so many nodes do not hit their hosts in lock-step.
DRIFT_JITTER = 0.2
# Delay before the first drift check after the operator starts (or the node appears).
DRIFT_INITIAL_DELAY = 10.0
# Deletion: drain bound, and how long an unreachable host may block deletion before the
# winnode.io/force-delete annotation is honoured (it is honoured at once after this much time).
DECONFIGURE_DRAIN = 120.0
DECONFIGURE_UNREACHABLE_GRACE = 300.0
# Upgrades and reboots (winnode.lifecycle.upgrade, reboot and disruption).
# A node waiting for a slot under the cluster-wide maxUnavailable is woken by a release in this process
# and otherwise looks again every `interval` (a release by another process); after `deadline` the pass
# ends and is retried, so the per-object lock is not held forever.
UPGRADE_SLOT_WAIT = Poll(interval=5.0, deadline=60.0)
# Retry of a pass that ended waiting for a slot, or after a blocked drain was aborted.
UPGRADE_SLOT_RETRY = 2.0
UPGRADE_DRAIN_RETRY = 30.0
# How long one drain may be blocked (a PodDisruptionBudget refusing evictions) before the drain-blocked
# policy applies (default: abort, uncordon, release the slot, retry after UPGRADE_DRAIN_RETRY).
UPGRADE_DRAIN = 120.0
# After the new binaries start: the Node must report Ready with the new kubeletVersion within this,
# else the previous binaries are put back. The same bound applies to the rollback itself.
UPGRADE_READY = Poll(interval=1.0, deadline=120.0)
# Optimistic-concurrency retries (409 Conflict) of a claim or release of a slot on the slots Lease,
# each after a random part of the interval.
UPGRADE_SLOT_CONFLICT = Poll(interval=0.2, deadline=30.0)
# With the budget full, holders whose WindowsNode is gone are looked for at most this often.
UPGRADE_SLOT_PRUNE = 30.0
# A reboot: the host must come back with a new boot id (which proves the reboot happened).
REBOOT_UP = Poll(interval=2.0, deadline=600.0)
# A service start/stop on the host (ServiceStartParams.timeout_s).
SERVICE_CONTROL = 60
# Optimistic-concurrency retries (409 Conflict) of a subnet allocation in WindowsNetwork status.
SUBNET_ALLOCATION_CONFLICT = Poll(interval=0.05, deadline=30.0)
# WindowsNetwork reconcile loop: at most this often (interval; events on its WindowsNodes wake it,
# lifecycle/network_wakeups.py), and how long a failed node blocks the rollout before it is tried
# again (deadline).
NETWORK_ROLLOUT = Poll(interval=2.0, deadline=30.0)
# ... and with no event at all, looked at again after this long: a fallback, since every look lists
# all the network's WindowsNodes.
NETWORK_RECHECK = 300.0
# Creating the first L2Bridge/Overlay network drops the host's connection for a few seconds while
# its address moves to the new vEthernet adapter: poll HNS again this often, for this long.
HNS_NETWORK_BLIP = Poll(interval=1.0, deadline=30.0)
# Route sync (lifecycle.route_sync): Node changes arriving within this window after the first are
# applied together, so a burst of joins costs each host one update, not one per join.
ROUTE_SYNC_DEBOUNCE = 1.0
# ... and one host's routes are updated at most once per max(ROUTE_SYNC_MIN_SPACING, hosts /
# ROUTE_SYNC_FLEET_RATE) seconds, the first change after a quiet spell at once: while a fleet joins
# node by node, every join changes every host's routes, and updating each host at each join costs
# commands in the square of the fleet. Bounded so, a 1,000-node bring-up makes at most 20 route
# updates a second, and a new node's pods are reachable from every host within 50 s.
ROUTE_SYNC_MIN_SPACING = 2.0
ROUTE_SYNC_FLEET_RATE = 20.0
# A failed route update of one host is retried this often, at most this long, then left for the
# next Node change.
ROUTE_SYNC_RETRY = Poll(interval=2.0, deadline=60.0)
# A WindowsNetwork still named by WindowsNodes stays (finalizer) and is looked at again this often.
NETWORK_IN_USE_RECHECK = 5.0

# Emulated kubelet (winnode.testing.kubelet). Where kubelet has a default, the value is that default.
# One API request of an emulated kubelet (watches excepted).
KUBELET_API_REQUEST = 15.0
# Node status is compared with the Node this often (kubelet nodeStatusUpdateFrequency) ...
KUBELET_NODE_STATUS_UPDATE = 10.0
# ... and posted when it changed, or unchanged this long after the last post (nodeStatusReportFrequency):
# the Lease, renewed every heartbeat, is what tells kcm the node is alive.
KUBELET_NODE_STATUS_REPORT = 300.0
# leaseDurationSeconds written into the node's Lease in kube-node-lease.
KUBELET_LEASE_DURATION = 40
# kubelet renews that Lease every quarter of its duration (pkg/kubelet/kubelet.go,
# nodeLeaseRenewIntervalFraction): what benchmarks' kubelets do. Tests' kubelets renew every
# KubeletConfig.heartbeat_interval_s (2 s), so a stopped one is noticed sooner.
KUBELET_LEASE_RENEW = KUBELET_LEASE_DURATION * 0.25
# Registration retries: kubelet starts at 100 ms and doubles up to 7 s.
KUBELET_REGISTER_BACKOFF = Poll(interval=0.1, deadline=7.0)
# Failed heartbeats, watches and pod updates are retried after this backoff (doubles from interval up to deadline).
KUBELET_RETRY_BACKOFF = Poll(interval=0.5, deadline=30.0)
# A client CSR not issued within this long ends the kubelet, as kubelet gives its bootstrap CSR one hour.
KUBELET_CLIENT_CSR_WAIT = 3600.0
# A serving CSR still pending after this long is given up and asked anew (client-go certificate manager).
KUBELET_SERVING_CSR_WAIT = 900.0
# Between serving CSR attempts that failed (denied, deleted, timed out), doubling up to deadline.
KUBELET_SERVING_CSR_BACKOFF = Poll(interval=2.0, deadline=300.0)
# A pending serving CSR is looked at after this delay, doubling up to deadline between looks.
KUBELET_SERVING_CSR_POLL = Poll(interval=0.5, deadline=15.0)
# Watches ask the apiserver to end them after this long plus up to as much again (client-go reflector).
KUBELET_WATCH_TIMEOUT = 300.0

# Talking to Windows (winnode.host).
# Opening a TCP (and TLS) connection to a WinRM listener; past this the host counts as unreachable.
WINRM_CONNECT = 10.0
# One WS-Management request other than Receive (Create, Command, Send, Signal, Delete).
WINRM_REQUEST = 30.0
# One Receive waits this long for output before the host answers OperationTimeout and we ask again
# (Windows caps it at MaxTimeoutms, 60 s by default). Our own deadline bounds the whole command.
WINRM_RECEIVE_WAIT = 20.0
# Extra read time on top of a Receive's OperationTimeout, for the host to send its answer.
WINRM_RECEIVE_MARGIN = 10.0
# Signal terminate and Delete shell after a command: short, so cleanup against a host that went away
# cannot hold a worker thread for long.
WINRM_CLEANUP = 10.0
# How long a cancelled host operation waits for its worker to stop the command and delete the shell
# before it returns (the worker goes on and the host lock stays held until it has): a stopping operator
# must release its Lease within the Pod's termination grace period (30 s by default).
WINRM_CANCEL_GRACE = 3.0
# Added to a script's own bound (service start/stop timeout_s, reboot delay) for its deadline.
WINRM_SCRIPT_MARGIN = 30.0
# How often the operator lists a host's shells and deletes those a previous winnode process left
# (besides on first contact and when the host refuses a shell for the per-user quota).
WINRM_SHELL_SWEEP_INTERVAL = 600.0
# An authenticated WinRM connection is kept for the next operation on its host while idle at most this
# long: well under HTTP.sys's idle connection timeout (120 s), after which the host closes it and the
# NTLM/Kerberos context bound to that TCP connection is gone.
WINRM_CONNECTION_IDLE = 60.0
# The watch of credentials Secrets (handlers/credentials.py): the server ends it after this long and
# it is opened again; after a failure it is retried with a doubling delay up to the deadline.
CREDENTIALS_WATCH_SERVER_TIMEOUT = 300.0
CREDENTIALS_WATCH_BACKOFF = Poll(interval=1.0, deadline=30.0)
