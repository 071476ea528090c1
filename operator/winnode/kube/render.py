"""Objects -> YAML text for manifests/, with the `why` of every RBAC rule as a comment above it.

A Role or ClusterRole rule with no `why` in winnode.kube.rbac is an error: nobody should have to
guess why the operator may do something.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from winnode.kube.rbac import Rule

ROLE_KINDS = ("Role", "ClusterRole")
COMMENT_WIDTH = 100


class UnexplainedRuleError(ValueError):
    pass


def _dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, width=120)


def _comment(text: str) -> str:
    return "".join(f"# {line}\n" for line in textwrap.wrap(text, COMMENT_WIDTH))


def render_object(obj: Mapping[str, Any], rules: Sequence[Rule]) -> str:
    """One YAML document; a (Cluster)Role's `rules` come last, each under its `why`."""
    if obj.get("kind") not in ROLE_KINDS or "rules" not in obj:
        return _dump(dict(obj))
    whys = [(r.to_dict(), r.why) for r in rules]
    head = {k: v for k, v in obj.items() if k != "rules"}
    out = [_dump(head), "rules:\n"]
    for rule in obj["rules"]:
        why = next((w for d, w in whys if d == rule), None)
        if why is None:
            name = obj.get("metadata", {}).get("name")
            raise UnexplainedRuleError(
                f"{obj['kind']} {name}: rule {rule} has no `why` in winnode.kube.rbac; add it there"
            )
        out.append(_comment(why) + _dump([rule]))
    return "".join(out)


def render_documents(objects: Iterable[Mapping[str, Any]], header: str, rules: Sequence[Rule]) -> str:
    return header + "---\n" + "---\n".join(render_object(o, rules) for o in objects)
