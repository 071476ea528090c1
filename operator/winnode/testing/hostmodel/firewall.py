"""Windows Firewall rules and the actions that ensure and remove them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from winnode.host import actions as A

if TYPE_CHECKING:
    from winnode.testing.hostmodel.model import HostModel


@dataclass
class FirewallRule:
    name: str
    display_name: str
    protocol: str
    local_port: int
    direction: str = "Inbound"
    enabled: bool = True


# --- the firewall actions ----------------------------------------------------------------------


async def rule_ensure(host: HostModel, p: A.FirewallRuleEnsureParams) -> A.ChangedResult:
    desired = FirewallRule(
        name=p.name,
        display_name=p.display_name,
        protocol=p.protocol,
        local_port=p.local_port,
        direction=p.direction,
    )
    if host.firewall_rules.get(p.name) == desired:
        return A.ChangedResult(changed=False)
    host.firewall_rules[p.name] = desired
    return A.ChangedResult(changed=True)


def rule_info(host: HostModel, name: str) -> A.FirewallRuleInfo:
    """A rule as templates/_firewall.ps1 Get-WinnodeFirewallRuleInfo reports it (rules here allow)."""
    rule = host.firewall_rules.get(name)
    if rule is None:
        return A.FirewallRuleInfo(exists=False)
    return A.FirewallRuleInfo(
        exists=True,
        display_name=rule.display_name,
        direction=rule.direction,
        action="Allow",
        enabled=rule.enabled,
        protocol=rule.protocol,
        local_port=str(rule.local_port),
    )


async def rule_remove(host: HostModel, p: A.FirewallRuleRemoveParams) -> A.RemovedResult:
    return A.RemovedResult(removed=host.firewall_rules.pop(p.name, None) is not None)
