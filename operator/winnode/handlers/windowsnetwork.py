"""kopf handlers of WindowsNetwork: status, the one-node-at-a-time rollout, and the deletion guard.

- a daemon per WindowsNetwork: woken by a change on its WindowsNodes or any WindowsNetwork
  (lifecycle/network_wakeups.py; at most every NETWORK_ROLLOUT.interval, and every NETWORK_RECHECK
  without one) it writes status (nodesApplied, nodesFailed, Valid / InUse / RollingOut / Ready,
  observedGeneration) and, when a spec change has not reached every node, reconfigures the node
  whose turn it is (lifecycle.network_rollout) and waits for it to be Ready before the next;
- delete (finalizer winnode.io/finalizer): refused while WindowsNodes still name the network; the
  admission webhook refuses such deletes up front, this is the backstop.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from winnode import timeouts
from winnode.api import NetworkRollout, WindowsNetwork, WindowsNetworkConditionType, set_condition
from winnode.api.windowsnetwork import WINDOWS_NETWORK
from winnode.handlers import waits
from winnode.handlers.windowsnode import Unreadable, open_session, record_failure
from winnode.kube.events import scrub
from winnode.lifecycle import network_rollout as policy
from winnode.lifecycle import upgrade
from winnode.lifecycle.configure import configure
from winnode.lifecycle.context import Deps
from winnode.lifecycle.network_setup import (
    network_members,
    network_specs,
    update_network_status,
)
from winnode.lifecycle.session import installed_version
from winnode.lifecycle.status import StepFailure
from winnode.network.overlap import name_list, overlapping_networks

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = WINDOWS_NETWORK.group, WINDOWS_NETWORK.version, WINDOWS_NETWORK.plural


async def reconcile(deps: Deps, name: str, blocked: str | None = None) -> NetworkRollout | None:
    """Write the network's status; the rollout turn to act on (None: nothing to roll out)."""
    views = await network_members(deps.kube, name)
    others = await network_specs(deps.kube)
    chosen: list[NetworkRollout | None] = [None]

    def compute(network: WindowsNetwork) -> dict[str, Any] | None:
        if network.metadata.deletion_timestamp is not None:
            return None
        generation = network.metadata.generation or 0
        rollout = policy.next_rollout(generation, views, network.status.rollout)
        chosen[0] = rollout
        summary = policy.summarize(generation, views)
        problems = overlapping_networks(name, network.spec, others)
        conditions = policy.conditions(
            network.status.conditions,
            generation=generation,
            summary=summary,
            rollout=rollout,
            problems=problems,
            blocked=blocked,
        )
        patch: dict[str, Any] = {
            "nodesApplied": summary.applied,
            "nodesFailed": summary.failed,
            "rollout": rollout.to_dict() if rollout is not None else None,
            "conditions": [c.to_dict() for c in conditions],
            "observedGeneration": generation,
        }
        old = network.status.model_dump(by_alias=True, mode="json", exclude_none=True)
        return None if {k: old.get(k) for k in patch} == patch else patch

    network = await update_network_status(deps.kube, name, compute)
    return None if network is None else chosen[0]


async def reconfigure(deps: Deps, network: str, turn: NetworkRollout) -> str | None:
    """Configure the node whose turn it is; None on success, else what failed (already in its status)."""
    assert turn.node is not None
    try:
        first = await open_session(deps, turn.node)
    except Unreadable as problem:
        return problem.message
    if first is None:
        return None
    async with deps.lock_for(first.node.metadata.uid or turn.node):
        try:
            s = await open_session(deps, turn.node)
        except Unreadable as problem:
            return problem.message
        if s is None or s.node.metadata.deletion_timestamp is not None or s.node.spec.paused:
            return None
        if upgrade.in_progress(s):
            return f"WindowsNode {turn.node} is being upgraded or rebooted; the rollout waits for it"
        s.writer.condition(
            policy.NODE_ROLLOUT_CONDITION,
            True,
            "Reconfiguring",
            f"applying generation {turn.generation} of WindowsNetwork {network}; other nodes wait",
        )
        await s.writer.flush()
        try:
            # Versions change only through the budgeted upgrade: a network change keeps the one installed.
            with deps.metrics.reconcile("rollout", kind="WindowsNetwork") as outcome:
                changes = await configure(s, keep_version=installed_version(s))
                outcome["outcome"] = "success"
        except StepFailure as failure:
            await record_failure(s, failure)
            s.writer.condition(policy.NODE_ROLLOUT_CONDITION, False, "Failed", failure.message)
            await s.writer.flush()
            return failure.message
        s.writer.condition(
            policy.NODE_ROLLOUT_CONDITION,
            False,
            "Applied",
            f"generation {turn.generation} of WindowsNetwork {network} applied and the node is Ready",
        )
        await s.writer.flush()
        summary = "; ".join(changes) if changes else "nothing to change on the host"
        await s.events.normal(
            "NetworkApplied", f"WindowsNetwork {network} generation {turn.generation}: {summary}"
        )
    return None


async def rollout_daemon(name: str, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    deps: Deps = memo.deps
    poll = timeouts.NETWORK_ROLLOUT
    wakeup = deps.network_wakeups.wakeup(name)
    blocked: str | None = None
    while not stopped:
        wait, idle = poll.interval, False
        # Cleared before the reads: a change arriving while they run wakes the next pass.
        wakeup.clear()
        try:
            turn = await reconcile(deps, name, blocked)
            if turn is not None and turn.node:
                blocked = await reconfigure(deps, name, turn)
                # Done: the next node's turn comes at once. Failed: the rollout waits there.
                wait = poll.deadline if blocked else 0.0
                if blocked:
                    await reconcile(deps, name, blocked)
            else:
                blocked, idle = None, True
        except Exception:
            # An API call failed; the next pass reads everything again.
            log.exception("reconciling WindowsNetwork %s failed", name)
        if wait:
            # Also the least time between two passes: a burst of events is one pass.
            await waits.sleep(stopped, wait)
        if idle and not stopped:
            await waits.sleep_or_wake(stopped, wakeup, timeouts.NETWORK_RECHECK)
    deps.network_wakeups.forget(name)


async def network_event(memo: kopf.Memo, **_: Any) -> None:
    memo.deps.network_wakeups.network_event()


async def delete_handler(name: str, memo: kopf.Memo, **_: Any) -> None:
    deps: Deps = memo.deps
    holders = sorted(v.name for v in await network_members(deps.kube, name))
    if not holders:
        return
    message = (
        f"WindowsNetwork {name} is still used by WindowsNodes {name_list(holders)}; it is deleted "
        "once none names it: delete those WindowsNodes or set their spec.network to another network"
    )

    def compute(network: WindowsNetwork) -> dict[str, Any]:
        conditions = set_condition(
            network.status.conditions,
            WindowsNetworkConditionType.IN_USE,
            True,
            "DeletionBlocked",
            message,
        )
        return {"conditions": [c.to_dict() for c in conditions]}

    await update_network_status(deps.kube, name, compute)
    raise kopf.TemporaryError(scrub(message), delay=timeouts.NETWORK_IN_USE_RECHECK)


def register(registry: kopf.OperatorRegistry) -> None:
    resource = (GROUP, VERSION, PLURAL)
    kopf.daemon(*resource, id="network", registry=registry, cancellation_timeout=5.0)(rollout_daemon)
    kopf.on.delete(*resource, id="network-in-use", registry=registry)(delete_handler)
    kopf.on.event(*resource, id="network-wakeups", registry=registry)(network_event)
