"""What kube-apiserver's own CEL code decides for an admission request: hack/celcheck, built from
k8s.io/apiserver at the pinned version (hack/build-celcheck.sh), evaluates our webhook matchConditions
and ValidatingAdmissionPolicy against requests of any shape, expression by expression.

Tests use it to prove that no expression of ours errors on a request the apiserver can send (an
evaluation error under failurePolicy Fail is a refusal of an unrelated request).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from winnode.testing.cluster import ControlPlaneError, repo_root

BUILD_TIMEOUT_S = 900.0
RUN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class RequestShape:
    """One AdmissionRequest as the apiserver builds it (admission.Attributes)."""

    name: str
    operation: str
    kind: tuple[str, str, str]  # group, version, kind
    resource: tuple[str, str, str]  # group, version, resource
    namespace: str = ""
    object_name: str = ""
    sub_resource: str = ""
    object: Mapping[str, Any] | None = None
    old_object: Mapping[str, Any] | None = None
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        g, v, k = self.kind
        rg, rv, r = self.resource
        return {
            "name": self.name,
            "operation": self.operation,
            "kind": {"Group": g, "Version": v, "Kind": k},
            "resource": {"Group": rg, "Version": rv, "Resource": r},
            "subResource": self.sub_resource,
            "namespace": self.namespace,
            "objectName": self.object_name,
            "object": self.object,
            "oldObject": self.old_object,
            "dryRun": self.dry_run,
        }


@dataclass(frozen=True)
class Expression:
    name: str
    expression: str
    value: Any = None
    error: str = ""


@dataclass(frozen=True)
class Match:
    matches: bool
    error: str = ""
    failed_condition: str = ""


@dataclass(frozen=True)
class WebhookOutcome:
    name: str
    match: Match
    expressions: tuple[Expression, ...]


@dataclass(frozen=True)
class PolicyOutcome:
    match: Match
    decisions: tuple[dict[str, str], ...]
    expressions: tuple[Expression, ...]

    @property
    def denied(self) -> bool:
        return any(d.get("action") == "deny" for d in self.decisions)


@dataclass(frozen=True)
class Outcome:
    shape: str
    webhooks: tuple[WebhookOutcome, ...] = field(default=())
    policy: PolicyOutcome | None = None

    def errors(self) -> list[str]:
        """Every expression or match that failed to evaluate, named."""
        out = []
        for w in self.webhooks:
            if w.match.error:
                out.append(f"{self.shape}: webhook {w.name} match: {w.match.error}")
            out += [f"{self.shape}: webhook {w.name} {e.name}: {e.error}" for e in w.expressions if e.error]
        if self.policy is not None:
            if self.policy.match.error:
                out.append(f"{self.shape}: policy match: {self.policy.match.error}")
            out += [f"{self.shape}: policy {e.name}: {e.error}" for e in self.policy.expressions if e.error]
            out += [
                f"{self.shape}: policy decision: {d.get('message')}"
                for d in self.policy.decisions
                if d.get("evaluation") == "error"
            ]
        return out


@cache
def binary() -> Path:
    """Build (or find, when cached) the checker; its path."""
    root = repo_root()
    if root is None:
        raise ControlPlaneError("hack/celcheck needs a winnode checkout (hack/build-celcheck.sh)")
    done = subprocess.run(
        ["bash", str(root / "hack" / "build-celcheck.sh")],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise ControlPlaneError(f"hack/build-celcheck.sh failed: {done.stderr.strip()[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def _expressions(raw: Sequence[Mapping[str, Any]]) -> tuple[Expression, ...]:
    return tuple(
        Expression(
            str(e.get("name", "")), str(e.get("expression", "")), e.get("value"), str(e.get("error") or "")
        )
        for e in raw or ()
    )


def _match(raw: Mapping[str, Any]) -> Match:
    return Match(bool(raw.get("matches")), str(raw.get("error") or ""), str(raw.get("failedCondition") or ""))


def evaluate(
    shapes: Sequence[RequestShape],
    *,
    webhooks: Sequence[Mapping[str, Any]] = (),
    policy: Mapping[str, Any] | None = None,
) -> list[Outcome]:
    """The apiserver's evaluation of each shape against the webhook entries and the policy."""
    doc = {"webhooks": list(webhooks), "policy": policy, "cases": [s.to_json() for s in shapes]}
    done = subprocess.run(
        [str(binary())],
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"celcheck failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    out = []
    for raw in json.loads(done.stdout):
        if raw.get("error"):
            raise ValueError(f"celcheck could not read case {raw.get('name')}: {raw['error']}")
        hooks = tuple(
            WebhookOutcome(str(w["name"]), _match(w["match"]), _expressions(w.get("expressions") or ()))
            for w in raw.get("webhooks") or ()
        )
        pol = raw.get("policy")
        policy_outcome = (
            PolicyOutcome(
                _match(pol["match"]),
                tuple(pol.get("decisions") or ()),
                _expressions(pol.get("expressions") or ()),
            )
            if pol
            else None
        )
        out.append(Outcome(str(raw.get("name")), hooks, policy_outcome))
    return out
