"""NodeReady follows the Node, whatever the host does.

The drift check used to update NodeReady only after it had reached the host, so a host that went
down kept NodeReady=True on its WindowsNode (the node lifecycle controller had long marked the Node
NotReady), and so did a WindowsNode being deleted. `mirror` reads the Node alone, before any host
work, and is called by the drift check and by each deletion pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from winnode.api import find_condition
from winnode.kube.api import ApiError
from winnode.kube.nodes import get_node
from winnode.lifecycle.status import C

if TYPE_CHECKING:
    from winnode.lifecycle.session import Session


def _not_ready_detail(node: dict[str, Any]) -> str:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            why = c.get("reason") or c.get("status") or "Unknown"
            message = c.get("message") or ""
            return f"{why}: {message}".rstrip(": ")
    return "no Ready condition yet"


async def mirror(s: Session) -> None:
    """Set NodeReady from the Node as it is now; only for a WindowsNode that had a NodeReady at all."""
    if find_condition(s.writer.status.conditions, C.NODE_READY) is None:
        return
    try:
        node = await get_node(s.deps.kube, s.node_name)
    except ApiError:
        return  # the API is what failed; the caller's own steps report that
    if node is None:
        s.writer.condition(C.NODE_READY, False, "NodeMissing", f"Node {s.node_name} does not exist")
        return
    conditions = (node.get("status") or {}).get("conditions") or []
    if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
        s.writer.condition(C.NODE_READY, True, "KubeletReady", f"Node {s.node_name} is Ready")
    else:
        s.writer.condition(
            C.NODE_READY,
            False,
            "NodeNotReady",
            f"Node {s.node_name} is not Ready ({_not_ready_detail(node)}); see `kubectl describe node {s.node_name}`",
        )
    await s.writer.flush()


def removed(s: Session) -> None:
    if find_condition(s.writer.status.conditions, C.NODE_READY) is not None:
        s.writer.condition(C.NODE_READY, False, "NodeRemoved", f"Node {s.node_name} was deleted")
