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
