"""docs/reference.md and the README's troubleshooting table are what `winnode docs` generates, and the
table explains every condition reason the code can write (found by reading the source)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from winnode import troubleshooting
from winnode.deploy import docgen

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "winnode"
# CamelCase words: a capital first, at least one lower-case letter (TLSVerificationFailed, WSManFault).
REASON = re.compile(r"^[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*$")
# Constructors whose first argument is a condition reason.
REASON_FIRST = {
    "StepFailure",
    "Problem",
    "ChecksumError",
    "CredentialsError",
    "SubnetError",
    "VersionError",
    "BootstrapTokenError",
    "NodeUpdateError",
    "ContainerdConfigError",
}
# Condition writers and the index of their reason argument: StatusWriter.condition(type, status,
# reason, ...) and api.set_condition(conditions, type, status, reason, ...); Event writers:
# Recorder.normal/warning(reason, message) and post_event(kube, involved, type, reason, message).
REASON_AT = {"condition": 2, "set_condition": 3, "normal": 0, "warning": 0, "post_event": 3}
# Not the reconciler's: the webhook's own verdict reasons, test tooling, CEL rule reasons.
SKIP_DIRS = {"testing", "admission", "api", "deploy"}


def _words(node: ast.AST) -> set[str]:
    """CamelCase string constants in `node` (a literal, or the branches of a conditional expression)."""
    if not isinstance(node, ast.Constant | ast.IfExp | ast.BoolOp):
        return set()
    return {
        n.value
        for n in ast.walk(node)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and REASON.match(n.value)
    }


def _callee(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def reasons_in_source() -> dict[str, set[str]]:
    """Reason -> files that write it."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in SKIP_DIRS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            words: set[str] = set()
            if isinstance(node, ast.Call):
                name = _callee(node)
                if name in REASON_FIRST and node.args:
                    words |= _words(node.args[0])
                if name in REASON_AT and len(node.args) > REASON_AT[name]:
                    words |= _words(node.args[REASON_AT[name]])
                for kw in node.keywords:
                    if kw.arg == "reason":
                        words |= _words(kw.value)
            elif (
                isinstance(node, ast.Return)
                and isinstance(node.value, ast.Tuple)
                and len(node.value.elts) == 2
                and isinstance(node.value.elts[1], ast.Constant | ast.JoinedStr)
            ):
                # `return "Passed", "the host meets every prerequisite"`: a (reason, message) pair.
                words |= _words(node.value.elts[0])
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                if isinstance(node.target, ast.Name) and node.target.id in ("reason", "default_reason"):
                    words |= _words(node.value)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id in ("reason", "default_reason"):
                        words |= _words(node.value)
                    if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        for i, element in enumerate(target.elts):
                            if (
                                isinstance(element, ast.Name)
                                and element.id == "reason"
                                and i < len(node.value.elts)
                            ):
                                words |= _words(node.value.elts[i])
            for word in words:
                found.setdefault(word, set()).add(str(rel))
    return found


def test_the_scan_finds_reasons_of_every_kind() -> None:
    found = reasons_in_source()
    # One of each way a reason is written: StepFailure, preflight Problem, HostError class default and
    # keyword, Secret errors, StatusWriter.condition, set_condition, tuple assignment.
    for reason in (
        "VersionSkew",
        "ContainersFeatureMissing",
        "TLSVerificationFailed",
        "WinRMQuotaExceeded",
        "SecretNotFound",
        "KubeletReady",
        "UpToDate",
        "NodesFailed",
        "Passed",
        "DriftRepaired",
        "HostTakenOver",
    ):
        assert reason in found, reason


def test_troubleshooting_table_covers_every_reason_in_the_code() -> None:
    known = troubleshooting.all_reasons()
    missing = {r: sorted(files) for r, files in reasons_in_source().items() if r not in known}
    assert not missing, f"add these to winnode/troubleshooting.py, then `winnode docs --write`: {missing}"


def test_troubleshooting_table_has_no_stale_reasons() -> None:
    in_code = set(reasons_in_source()) | set(troubleshooting.script_failure_reasons())
    stale = sorted(set(troubleshooting.all_reasons()) - in_code)
    assert not stale, f"no code writes these any more; drop them from winnode/troubleshooting.py: {stale}"


def test_every_problem_says_what_to_do() -> None:
    for reason in troubleshooting.all_reasons().values():
        assert reason.meaning, reason.name
        assert not reason.action or len(reason.action) > 10, reason.name


def test_reference_is_up_to_date() -> None:
    path = ROOT / docgen.REFERENCE_FILE
    assert path.read_text() == docgen.reference(), "docs/reference.md is stale: run `winnode docs --write`"


def test_readme_table_is_up_to_date() -> None:
    readme = (ROOT / docgen.README_FILE).read_text()
    assert readme == docgen.readme_with_table(readme), (
        "README.md's table is stale: run `winnode docs --write`"
    )
    for reason in troubleshooting.all_reasons():
        assert f"| `{reason}` |" in readme


def test_reference_lists_every_field_of_both_resources() -> None:
    text = (ROOT / docgen.REFERENCE_FILE).read_text()
    for path in (
        "spec.winrm.credentialsSecretRef.name",
        "spec.kubernetesVersion",
        "spec.taints[].effect",
        "status.conditions[].reason",
        "status.phase",
    ):
        assert f"| `{path}` |" in text, path
    assert "## WindowsNetwork" in text
    assert "## WindowsNode" in text
