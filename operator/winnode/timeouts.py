"""Every wait, poll interval and backoff of winnode in one place, so they can be read side by side.

Values are seconds. A "bounded poll" is `interval` between tries until `deadline` has passed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Poll:
    interval: float
    deadline: float


# Local control plane (winnode.testing.cluster).
CONTROL_PLANE_READY = Poll(interval=0.2, deadline=90.0)
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
