"""manifests/monitoring/ is what winnode.deploy.monitoring generates, and every expression in it names only
series the two processes really expose."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from winnode.admission.metrics import WebhookMetrics
from winnode.deploy import monitoring
from winnode.metrics import OperatorMetrics, sample_names

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "manifests" / "monitoring"
METRIC = re.compile(r"\b(winnode_[a-z0-9_]+)")
REQUIRED_ALERTS = {
    "WinnodeNoLeader",
    "WinnodeWindowsNodeFailed",
    "WinnodeWindowsNodeDegraded",
    "WinnodeUpgradeStuck",
    "WinnodeReconcileErrors",
    "WinnodeWebhookLatencyHigh",
}


def exposed() -> frozenset[str]:
    return sample_names(OperatorMetrics().registry) | sample_names(WebhookMetrics().registry)


def families() -> set[str]:
    return {f.name for m in (OperatorMetrics(), WebhookMetrics()) for f in m.registry.collect()}


def rule_exprs() -> list[str]:
    doc = yaml.safe_load((MONITORING / monitoring.RULES_FILE).read_text())
    return [r["expr"] for g in doc["spec"]["groups"] for r in g["rules"]]


def panel_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for ch in expr:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack


def test_committed_files_match_the_generator() -> None:
    for name, text in monitoring.render_all().items():
        path = MONITORING / name
        assert path.exists(), f"{path} missing: run `winnode monitoring --write manifests/monitoring/`"
        assert path.read_text() == text, (
            f"{path} is stale: run `winnode monitoring --write manifests/monitoring/`"
        )


def test_every_expression_names_only_exposed_series() -> None:
    dashboard = json.loads((MONITORING / monitoring.DASHBOARD_FILE).read_text())
    known = exposed()
    exprs = rule_exprs() + panel_exprs(dashboard)
    assert exprs
    for expr in exprs:
        names = set(METRIC.findall(expr))
        assert names, expr
        assert names <= known, f"{expr}: unknown {sorted(names - known)}"
        assert balanced(expr), expr


def test_dashboard_has_a_panel_for_every_series_and_a_datasource_variable() -> None:
    dashboard = json.loads((MONITORING / monitoring.DASHBOARD_FILE).read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"]
    used = {
        re.sub(r"_(total|bucket|sum|count)$", "", n)
        for e in panel_exprs(dashboard)
        for n in METRIC.findall(e)
    }
    assert families() <= used, f"no panel for {sorted(families() - used)}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_alerts_have_runbooks_and_cover_what_matters() -> None:
    doc = yaml.safe_load((MONITORING / monitoring.RULES_FILE).read_text())
    assert doc["kind"] == "PrometheusRule"
    rules = [r for g in doc["spec"]["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert len(rule["annotations"]["runbook"]) > 80, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"])


def test_pod_monitors_select_both_processes() -> None:
    from winnode.admission import config
    from winnode.deploy import manifests

    docs = list(yaml.safe_load_all((MONITORING / monitoring.MONITORS_FILE).read_text()))
    selectors = [d["spec"]["selector"]["matchLabels"] for d in docs]
    assert manifests.RECONCILER_LABELS in selectors
    assert config.APP_LABELS in selectors
    kustomization = yaml.safe_load((MONITORING / monitoring.KUSTOMIZATION_FILE).read_text())
    for file in kustomization["resources"]:
        assert (MONITORING / file).exists()
