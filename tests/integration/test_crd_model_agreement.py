"""What the apiserver stores, the operator reads: the CRD schemas and the pydantic models agree.

For every field of a spec that carries a `pattern` (and every map whose keys a CEL `matches` rule
constrains), hypothesis generates values: ones the pattern describes, the same with a character
that regex engines disagree about put in, and arbitrary text. Each candidate goes through the real
apiserver as a server-side dry run; every object it accepts must validate in the operator's model.
(The apiserver checks `pattern` and CEL `matches` with Go's regexp, where \\s, \\d and \\w are ASCII
only; Python's re and pydantic's Rust regex make them Unicode-aware.)
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from winnode.api import WindowsNetwork, WindowsNode
from winnode.settings import API_GROUP, API_VERSION
from winnode.testing.cluster import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_PER_FIELD = 30
# Characters on which regex engines and Unicode-aware helpers part ways: Unicode spaces and line
# breaks, non-ASCII digits and letters, a zero-width joiner, a byte-order mark.
TRICKY = "\u00a0\u2028\u2029\u0085\u3000\u1680\u2009\u000b\u200d\ufeff\u0660\u00e9\u0131K\t\n"

BASES: dict[str, dict[str, Any]] = {
    "WindowsNode": {
        "address": "192.0.2.10",
        "network": "agree-net",
        "paused": True,
        "winrm": {"credentialsSecretRef": {"namespace": "winnode-system", "name": "winrm"}},
        "artifacts": {"baseURL": "https://mirror.example/k8s"},
        "taints": [{"key": "os", "value": "windows", "effect": "NoSchedule"}],
    },
    "WindowsNetwork": {"mode": "overlay", "clusterCIDR": "10.244.0.0/16", "serviceCIDR": "10.96.0.0/12"},
}
# Fields that apply only beside another setting: the base they are generated into.
FIELD_BASES: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {
    ("WindowsNode", ("winrm", "kerberosHostname")): {
        **BASES["WindowsNode"],
        "winrm": {**BASES["WindowsNode"]["winrm"], "auth": "kerberos"},
    },
}
MODELS = {"WindowsNode": WindowsNode, "WindowsNetwork": WindowsNetwork}
PLURALS = {"WindowsNode": "windowsnodes", "WindowsNetwork": "windowsnetworks"}
_MATCHES = re.compile(r"(?<![!])k\.matches\('((?:[^'\\]|\\.)*)'\)")
_SELF_MATCHES = re.compile(r"(?<!!)self\.matches\('((?:[^'\\]|\\.)*)'\)")


def string_patterns(node: dict[str, Any]) -> list[str]:
    """The patterns a string schema holds: `pattern`, or a CEL `self.matches(...)` rule."""
    out = [node["pattern"]] if "pattern" in node else []
    if node.get("type") == "string":
        for rule in node.get("x-kubernetes-validations") or []:
            match = _SELF_MATCHES.search(rule["rule"])
            if match:
                out.append(match.group(1).replace("\\\\", "\\"))
    return out


def patterned_fields(kind: str) -> list[tuple[tuple[str, ...], str, str]]:
    """(path under spec, "value" | "list" | "map-value" | "map-key", pattern) for every constrained string."""
    crd = yaml.safe_load((ROOT / "crds" / f"{PLURALS[kind]}.{API_GROUP}.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    found: list[tuple[tuple[str, ...], str, str]] = []

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> None:
        for name, child in (node.get("properties") or {}).items():
            here = (*path, name)
            if "pattern" in child:
                found.append((here, "value", child["pattern"]))
            items = child.get("items") or {}
            found.extend((here, "list", p) for p in string_patterns(items))
            if items.get("properties"):
                walk(items, (*here, "[0]"))
            values = child.get("additionalProperties")
            if isinstance(values, dict):
                found.extend((here, "map-value", p) for p in string_patterns(values))
            for rule in child.get("x-kubernetes-validations") or []:
                # A rule that refuses keys matching a pattern (reserved prefixes) generates nothing.
                match = None if "!k.matches" in rule["rule"] else _MATCHES.search(rule["rule"])
                if match and child.get("additionalProperties"):
                    found.append((here, "map-key", match.group(1).replace("\\\\", "\\")))
                match = _SELF_MATCHES.search(rule["rule"])
                if match and child.get("type") == "string":
                    found.append((here, "value", match.group(1).replace("\\\\", "\\")))
            if child.get("properties"):
                walk(child, here)

    walk(schema, ())
    return found


def candidates(pattern: str) -> st.SearchStrategy[str]:
    valid = st.from_regex(pattern, fullmatch=True)
    # Python reads the CRD pattern with Unicode classes: what it generates may hold the very
    # characters the apiserver's ASCII classes refuse, and vice versa.
    spliced = st.tuples(valid, st.sampled_from(TRICKY), st.integers(0, 64)).map(
        lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :]
    )
    return st.one_of(valid, spliced, st.text(max_size=24))


def place(spec: dict[str, Any], path: tuple[str, ...], shape: str, value: str) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    cursor: Any = out
    for part in path[:-1]:
        if part == "[0]":
            cursor = cursor[0]
            continue
        cursor = cursor.setdefault(part, {})
    leaf = path[-1]
    if shape == "value":
        cursor[leaf] = value
    elif shape == "list":
        cursor[leaf] = [value]
    elif shape == "map-value":
        key = {"sha256": "kubelet.exe", "systemReserved": "cpu"}.get(leaf, "example.com/key")
        cursor[leaf] = {key: value}
    else:
        cursor[leaf] = {value: "a" * 64 if leaf == "sha256" else "1"}
    return out


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> Iterator[kubernetes.client.CustomObjectsApi]:
    control_plane.kubectl("apply", "-f", str(ROOT / "crds"))
    control_plane.kubectl(
        "wait",
        "--for=condition=Established",
        *(f"crd/{p}.{API_GROUP}" for p in PLURALS.values()),
        "--timeout=60s",
        timeout=90,
    )
    client = control_plane.api_client()
    try:
        yield kubernetes.client.CustomObjectsApi(client)
    finally:
        client.close()  # type: ignore[no-untyped-call]


def stored(api: kubernetes.client.CustomObjectsApi, kind: str, spec: dict[str, Any]) -> dict[str, Any] | None:
    """What the apiserver would store for this spec (server-side dry run), or None if it refuses it."""
    body = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": kind,
        "metadata": {"name": "agree"},
        "spec": spec,
    }
    try:
        result: dict[str, Any] = api.create_cluster_custom_object(
            API_GROUP, API_VERSION, PLURALS[kind], body, dry_run="All"
        )
    except ApiException as exc:
        if exc.status == 422:
            return None
        raise
    return result


FIELDS = [(kind, *field) for kind in BASES for field in patterned_fields(kind)]


def test_every_patterned_field_is_covered() -> None:
    paths = {(kind, ".".join(path), shape) for kind, path, shape, _ in FIELDS}
    assert ("WindowsNode", "artifacts.baseURL", "value") in paths
    assert ("WindowsNode", "address", "value") in paths
    assert ("WindowsNode", "labels", "map-key") in paths
    assert ("WindowsNode", "kubelet.extraArgs", "map-key") in paths
    assert ("WindowsNetwork", "dns.search", "list") in paths
    assert len(paths) >= 10, sorted(paths)


@pytest.mark.parametrize(
    ("kind", "path", "shape", "pattern"), FIELDS, ids=[f"{k}.{'.'.join(p)}:{s}" for k, p, s, _ in FIELDS]
)
def test_what_the_apiserver_stores_the_operator_reads(
    api: kubernetes.client.CustomObjectsApi, kind: str, path: tuple[str, ...], shape: str, pattern: str
) -> None:
    accepted: list[str] = []

    @settings(
        max_examples=EXAMPLES_PER_FIELD,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(value=candidates(pattern))
    def check(value: str) -> None:
        base = FIELD_BASES.get((kind, path), BASES[kind])
        obj = stored(api, kind, place(base, path, shape, value))
        if obj is None:
            return
        accepted.append(value)
        try:
            MODELS[kind].model_validate(obj)
        except ValidationError as exc:
            raise AssertionError(
                f"the apiserver stores {kind} spec.{'.'.join(path)} = {json.dumps(value)} "
                f"but the operator cannot read it: {exc.errors()[0]['msg']}"
            ) from None

    check()
    assert accepted, "no generated value was accepted: the check would be empty"


@pytest.mark.parametrize("space", ["\u00a0", "\u2028", "\u0085", "\u3000", "\u1680"])
def test_unicode_space_in_base_url_is_refused_by_both(
    api: kubernetes.client.CustomObjectsApi, space: str
) -> None:
    # Regression: the cluster stored such a baseURL and the operator could not read the object.
    spec = place(
        BASES["WindowsNode"], ("artifacts", "baseURL"), "value", f"https://mirror{space}.example/k8s"
    )
    assert stored(api, "WindowsNode", spec) is None
    body = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "WindowsNode",
        "metadata": {"name": "x"},
        "spec": spec,
    }
    with pytest.raises(ValidationError, match=r"baseURL|base_url"):
        WindowsNode.model_validate(body)
