"""The generated CRDs against a real kube-apiserver: they install, accept the examples, refuse bad
objects naming the field, explain themselves, print their columns and obey RBAC."""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from winnode.api import WindowsNetworkSpec, WindowsNodeSpec
from winnode.settings import API_GROUP, API_VERSION
from winnode.testing.cluster import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
CRD_NAMES = (f"windowsnodes.{API_GROUP}", f"windowsnetworks.{API_GROUP}")
API = f"{API_GROUP}/{API_VERSION}"
# Objects this module creates for real carry this prefix, so they never meet other tests' objects.
PREFIX = "crdtest"

NODE_SPEC: dict[str, Any] = {
    "address": "192.0.2.10",
    "network": f"{PREFIX}-net",
    "paused": True,  # no operator may act on these objects should one run in this cluster
    "winrm": {"credentialsSecretRef": {"namespace": "winnode-system", "name": "winrm"}},
}
NETWORK_SPEC: dict[str, Any] = {
    "mode": "overlay",
    "clusterCIDR": "10.244.0.0/16",
    "serviceCIDR": "10.96.0.0/12",
}


def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec}


def with_changes(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` merged in (dicts recursively, None deletes)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = with_changes(out[key], value)
        else:
            out[key] = value
    return out


def poll(what: str, check: Any, deadline: float = 60.0, interval: float = 0.5) -> Any:
    end = time.monotonic() + deadline
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline:g}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> ControlPlane:
    """The control plane with crds/ applied and served."""
    control_plane.kubectl("apply", "-f", str(ROOT / "crds"))
    control_plane.kubectl(
        "wait", "--for=condition=Established", *(f"crd/{n}" for n in CRD_NAMES), "--timeout=60s", timeout=90
    )
    # Established comes a moment before discovery and the OpenAPI document list the new types.
    poll("discovery of winnode.io", lambda: control_plane.kubectl("get", "wn", check=False).returncode == 0)
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(_namespace("winnode-system")))
    return control_plane


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


@pytest.fixture
def cleanup(cluster: ControlPlane) -> Iterator[list[str]]:
    """Names ("wn/x", "wnet/y") to delete after the test."""
    names: list[str] = []
    yield names
    if names:
        cluster.kubectl("delete", "--ignore-not-found", "--wait=false", *names)


def create(cluster: ControlPlane, body: dict[str, Any], *, dry_run: bool = False, check: bool = True) -> Any:
    args = ["create", "--validate=strict", "-f", "-", "-o", "json"]
    if dry_run:
        args.append("--dry-run=server")
    return cluster.kubectl(*args, input=json.dumps(body), check=check)


# --- installation ------------------------------------------------------------------------------


def test_crds_are_established_with_names_and_scope(cluster: ControlPlane) -> None:
    for name in CRD_NAMES:
        crd = json.loads(cluster.kubectl("get", "crd", name, "-o", "json").stdout)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", conditions
        assert conditions.get("NamesAccepted") == "True", conditions
        assert crd["spec"]["scope"] == "Cluster"
    resources = cluster.kubectl("api-resources", f"--api-group={API_GROUP}", "--no-headers").stdout
    rows = {line.split()[0]: line.split() for line in resources.splitlines()}
    assert rows["windowsnodes"][1:] == ["wn", API, "false", "WindowsNode"]
    assert rows["windowsnetworks"][1:] == ["wnet", API, "false", "WindowsNetwork"]
    categories = cluster.kubectl("api-resources", "--categories=windows", "-o", "name").stdout.split()
    assert sorted(categories) == [f"windowsnetworks.{API_GROUP}", f"windowsnodes.{API_GROUP}"]


def test_applying_crds_again_changes_nothing(cluster: ControlPlane) -> None:
    out = cluster.kubectl("apply", "-f", str(ROOT / "crds")).stdout
    assert out.count("unchanged") == len(CRD_NAMES), out


# --- valid objects -----------------------------------------------------------------------------


def test_examples_are_accepted(cluster: ControlPlane) -> None:
    result = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", str(ROOT / "examples"))
    accepted = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == 3, result.stdout
    assert not result.stderr.strip(), result.stderr  # strict validation also warns on unknown fields


@pytest.mark.parametrize(
    ("kind", "spec", "model"),
    [("WindowsNode", NODE_SPEC, WindowsNodeSpec), ("WindowsNetwork", NETWORK_SPEC, WindowsNetworkSpec)],
    ids=["WindowsNode", "WindowsNetwork"],
)
def test_apiserver_defaults_match_model_defaults(
    cluster: ControlPlane, kind: str, spec: dict[str, Any], model: Any
) -> None:
    stored = json.loads(create(cluster, obj(kind, f"{PREFIX}-defaults", spec), dry_run=True).stdout)["spec"]
    expected = _without_empty(model.model_validate(spec).to_dict())
    assert stored == expected


def _without_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_empty(v) for k, v in value.items() if v not in ({}, [])}
    return value


# --- invalid objects ---------------------------------------------------------------------------

# (id, kind, changes to the valid spec, field path the error must name, part of the message)
INVALID: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("address-garbage", "WindowsNode", {"address": "not a host!"}, "spec.address", "DNS name"),
    ("address-bad-ipv4", "WindowsNode", {"address": "999.1.2.3"}, "spec.address", "DNS name"),
    ("node-name", "WindowsNode", {"nodeName": "Win_01"}, "spec.nodeName", "must be a DNS subdomain"),
    ("network-missing", "WindowsNode", {"network": None}, "spec.network", "Required value"),
    (
        "port-range",
        "WindowsNode",
        {"winrm": {"port": 70000}},
        "spec.winrm.port",
        "less than or equal to 65535",
    ),
    ("auth-unknown", "WindowsNode", {"winrm": {"auth": "digest"}}, "spec.winrm.auth", "Unsupported value"),
    (
        "http-with-basic",
        "WindowsNode",
        {"winrm": {"scheme": "http", "auth": "basic"}},
        "spec.winrm.scheme",
        "scheme http is only allowed with auth ntlm, kerberos or credssp",
    ),
    (
        "ca-and-skip-verify",
        "WindowsNode",
        {"winrm": {"caBundle": "-----BEGIN CERTIFICATE-----\nx\n", "insecureSkipVerify": True}},
        "spec.winrm.caBundle",
        "not both",
    ),
    (
        "skip-verify-over-http",
        "WindowsNode",
        {"winrm": {"scheme": "http", "insecureSkipVerify": True}},
        "spec.winrm.insecureSkipVerify",
        "only applies to scheme https",
    ),
    (
        "secret-ref-missing",
        "WindowsNode",
        {"winrm": {"credentialsSecretRef": None}},
        "spec.winrm.credentialsSecretRef",
        "Required value",
    ),
    (
        "secret-namespace",
        "WindowsNode",
        {"winrm": {"credentialsSecretRef": {"namespace": "Kube_System"}}},
        "spec.winrm.credentialsSecretRef.namespace",
        "must be a DNS label",
    ),
    (
        "kerberos-with-ip",
        "WindowsNode",
        {"winrm": {"auth": "kerberos"}},
        "spec.address",
        "kerberos needs address to be the host's DNS name",
    ),
    (
        "version-format",
        "WindowsNode",
        {"kubernetesVersion": "1.37"},
        "spec.kubernetesVersion",
        "must be a Kubernetes 1.x release written v1.MINOR.PATCH",
    ),
    (
        "version-not-1x",
        "WindowsNode",
        {"kubernetesVersion": "v9.9.9"},
        "spec.kubernetesVersion",
        'Invalid value: "v9.9.9": must be a Kubernetes 1.x release written v1.MINOR.PATCH, such as v1.37.2',
    ),
    (
        "version-latest",
        "WindowsNode",
        {"kubernetesVersion": "latest"},
        "spec.kubernetesVersion",
        'Invalid value: "latest": must be a Kubernetes 1.x release',
    ),
    (
        "version-no-v",
        "WindowsNode",
        {"kubernetesVersion": "1.37.2"},
        "spec.kubernetesVersion",
        "(with the leading v; names like latest are not versions)",
    ),
    (
        "base-url",
        "WindowsNode",
        {"artifacts": {"baseURL": "ftp://mirror"}},
        "spec.artifacts.baseURL",
        "must be an http(s) URL of a directory",
    ),
    (
        "sha256-not-hex",
        "WindowsNode",
        {"artifacts": {"baseURL": "https://mirror", "sha256": {"kubelet.exe": "z" * 64}}},
        "spec.artifacts.sha256[kubelet.exe]",
        "must be a SHA-256 digest: 64 hexadecimal digits",
    ),
    (
        "sha256-file-path",
        "WindowsNode",
        {"artifacts": {"baseURL": "https://mirror", "sha256": {"../kubelet.exe": "a" * 64}}},
        "spec.artifacts.sha256",
        "'../kubelet.exe': file names must be plain file names",
    ),
    ("label-key", "WindowsNode", {"labels": {"bad key": "x"}}, "spec.labels", "'bad key': label keys"),
    (
        "label-value",
        "WindowsNode",
        {"labels": {"ok": "-bad-"}},
        "spec.labels[ok]",
        "must be empty or up to 63",
    ),
    (
        "label-reserved-os",
        "WindowsNode",
        {"labels": {"kubernetes.io/os": "linux"}},
        "spec.labels",
        "'kubernetes.io/os': label keys under kubernetes.io/ and k8s.io/ belong to Kubernetes",
    ),
    (
        "label-reserved-subdomain",
        "WindowsNode",
        {"labels": {"example.k8s.io/x": "y"}},
        "spec.labels",
        "'example.k8s.io/x': label keys under kubernetes.io/ and k8s.io/",
    ),
    (
        "label-windows-build",
        "WindowsNode",
        {"labels": {"node.kubernetes.io/windows-build": "10.0.1"}},
        "spec.labels",
        "come from the host itself",
    ),
    (
        "taint-key",
        "WindowsNode",
        {"taints": [{"key": "bad key!", "effect": "NoSchedule"}]},
        "spec.taints[0].key",
        "must be a key such as os or example.com/dedicated",
    ),
    (
        "taint-effect",
        "WindowsNode",
        {"taints": [{"key": "a", "effect": "Sometimes"}]},
        "spec.taints[0].effect",
        "Unsupported value",
    ),
    (
        "taint-duplicate",
        "WindowsNode",
        {
            "taints": [
                {"key": "a", "effect": "NoSchedule"},
                {"key": "a", "value": "b", "effect": "NoSchedule"},
            ]
        },
        "spec.taints[1]",
        "Duplicate value",
    ),
    (
        "max-pods",
        "WindowsNode",
        {"kubelet": {"maxPods": 0}},
        "spec.kubelet.maxPods",
        "greater than or equal to 1",
    ),
    (
        "credssp-refused",
        "WindowsNode",
        {"winrm": {"auth": "credssp"}},
        "spec.winrm.auth",
        "auth credssp is not supported: winnode has no CredSSP client",
    ),
    (
        "managed-kubelet-flag",
        "WindowsNode",
        {"kubelet": {"extraArgs": {"v": "2", "hostname-override": "x"}}},
        "spec.kubelet.extraArgs",
        "'hostname-override': extraArgs must not set",
    ),
    (
        "weakening-kubelet-flag",
        "WindowsNode",
        {"kubelet": {"extraArgs": {"v": "2", "anonymous-auth": "true"}}},
        "spec.kubelet.extraArgs",
        "'anonymous-auth': extraArgs must not set anonymous-auth, authentication-token-webhook",
    ),
    (
        "managed-root-dir",
        "WindowsNode",
        {"kubelet": {"extraArgs": {"root-dir": "D:\\k"}}},
        "spec.kubelet.extraArgs",
        "'root-dir': extraArgs must not set",
    ),
    (
        "percent-in-kubelet-flag",
        "WindowsNode",
        {"kubelet": {"extraArgs": {"v": "2", "node-ip": "%HOST_IP%"}}},
        "spec.kubelet.extraArgs",
        "'node-ip': extraArgs values must not contain '%'",
    ),
    (
        "system-reserved-resource",
        "WindowsNode",
        {"kubelet": {"systemReserved": {"gpu": "1"}}},
        "spec.kubelet.systemReserved",
        "'gpu': systemReserved resources must be one of",
    ),
    (
        "system-reserved-quantity",
        "WindowsNode",
        {"kubelet": {"systemReserved": {"memory": "lots"}}},
        "spec.kubelet.systemReserved[memory]",
        'Invalid value: "lots": must be a quantity such as 500m, 2Gi, 1.5 or 100',
    ),
    (
        "unknown-field",
        "WindowsNode",
        {"adress": "10.0.0.1"},
        'unknown field "spec.adress"',
        "strict decoding",
    ),
    ("mode", "WindowsNetwork", {"mode": "vlan"}, "spec.mode", "Unsupported value"),
    (
        "cluster-cidr-garbage",
        "WindowsNetwork",
        {"clusterCIDR": "banana"},
        "spec.clusterCIDR",
        "must be a CIDR",
    ),
    (
        "cluster-cidr-host-bits",
        "WindowsNetwork",
        {"clusterCIDR": "10.244.1.0/16"},
        "spec.clusterCIDR",
        "no bits set after the prefix",
    ),
    ("cluster-cidr-ipv6", "WindowsNetwork", {"clusterCIDR": "fd00::/48"}, "spec.clusterCIDR", "IPv4"),
    (
        "service-overlaps-cluster",
        "WindowsNetwork",
        {"serviceCIDR": "10.0.0.0/8"},
        "spec.serviceCIDR",
        "must not overlap clusterCIDR",
    ),
    (
        "node-prefix-not-longer",
        "WindowsNetwork",
        {"clusterCIDR": "10.244.0.0/24", "nodeSubnetPrefixLength": 24},
        "spec.nodeSubnetPrefixLength",
        "longer than the clusterCIDR prefix",
    ),
    (
        "node-prefix-range",
        "WindowsNetwork",
        {"nodeSubnetPrefixLength": 30},
        "spec.nodeSubnetPrefixLength",
        "less than or equal to 28",
    ),
    (
        "vxlan-on-l2bridge",
        "WindowsNetwork",
        {"mode": "l2bridge", "vxlan": {"vni": 4096}},
        "spec.vxlan",
        "only be set when mode is overlay",
    ),
    (
        "vxlan-vni",
        "WindowsNetwork",
        {"vxlan": {"vni": 4095}},
        "spec.vxlan.vni",
        "greater than or equal to 4096",
    ),
    (
        "dns-server",
        "WindowsNetwork",
        {"dns": {"servers": ["dns.example"]}},
        "spec.dns.servers[0]",
        "IPv4 or IPv6",
    ),
    (
        "nat-exception",
        "WindowsNetwork",
        {"outboundNATExceptions": ["10.0.0.0/33"]},
        "spec.outboundNATExceptions[0]",
        "must be a CIDR",
    ),
    (
        "nat-exception-duplicate",
        "WindowsNetwork",
        {"outboundNATExceptions": ["192.168.0.0/16", "192.168.0.0/16"]},
        "spec.outboundNATExceptions[1]",
        "Duplicate value",
    ),
]


@pytest.mark.parametrize("kind", ["WindowsNode", "WindowsNetwork"])
def test_base_objects_of_the_invalid_table_are_valid(cluster: ControlPlane, kind: str) -> None:
    spec = NODE_SPEC if kind == "WindowsNode" else NETWORK_SPEC
    create(cluster, obj(kind, f"{PREFIX}-base", spec), dry_run=True)


@pytest.mark.parametrize(
    ("kind", "changes", "field", "message"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_objects_are_refused_naming_the_field(
    cluster: ControlPlane, kind: str, changes: dict[str, Any], field: str, message: str
) -> None:
    spec = with_changes(NODE_SPEC if kind == "WindowsNode" else NETWORK_SPEC, changes)
    result = create(cluster, obj(kind, f"{PREFIX}-invalid", spec), dry_run=True, check=False)
    assert result.returncode != 0, f"accepted: {json.dumps(spec)}"
    assert field in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    # The error sits on the named field, not only somewhere in the output.
    error_lines = [line for line in result.stderr.splitlines() if field in line]
    assert any(message in line for line in error_lines), result.stderr


def test_labels_a_kubelet_or_an_admin_may_set_are_accepted(cluster: ControlPlane) -> None:
    labels = {
        "node-restriction.kubernetes.io/pool": "gpu",
        "node.kubernetes.io/exclude-from-external-load-balancers": "true",
        "kubelet.kubernetes.io/x": "y",
        "topology.kubernetes.io/zone": "z1",
        "node.kubernetes.io/instance-type": "d4s",
        "example.com/rack": "r12",
        "team": "a",
    }
    create(
        cluster,
        obj("WindowsNode", f"{PREFIX}-labels", with_changes(NODE_SPEC, {"labels": labels})),
        dry_run=True,
    )


def test_node_name_cannot_change(cluster: ControlPlane, cleanup: list[str]) -> None:
    name = f"{PREFIX}-immutable"
    create(cluster, obj("WindowsNode", name, NODE_SPEC))
    cleanup.append(f"wn/{name}")

    def patch(spec: dict[str, Any]) -> Any:
        return cluster.kubectl(
            "patch", "wn", name, "--type=merge", "-p", json.dumps({"spec": spec}), check=False
        )

    # Spelling out the default is no change; another name is.
    assert patch({"nodeName": name}).returncode == 0
    refused = patch({"nodeName": "somebody-else"})
    assert refused.returncode != 0
    assert "spec.nodeName" in refused.stderr
    assert "nodeName cannot change once set" in refused.stderr
    # Other fields stay editable.
    assert patch({"network": "another-net", "paused": False}).returncode == 0
    patch({"paused": True})


def test_network_ranges_cannot_change(cluster: ControlPlane, cleanup: list[str]) -> None:
    name = f"{PREFIX}-immutable"
    create(cluster, obj("WindowsNetwork", name, NETWORK_SPEC))
    cleanup.append(f"wnet/{name}")

    def patch(spec: dict[str, Any]) -> Any:
        return cluster.kubectl(
            "patch", "wnet", name, "--type=merge", "-p", json.dumps({"spec": spec}), check=False
        )

    changes: list[tuple[dict[str, Any], str]] = [
        ({"clusterCIDR": "10.245.0.0/16"}, "spec.clusterCIDR"),
        ({"mode": "l2bridge"}, "spec.mode"),
        ({"nodeSubnetPrefixLength": 25}, "spec.nodeSubnetPrefixLength"),
    ]
    for change, field in changes:
        refused = patch(change)
        assert refused.returncode != 0, change
        assert field in refused.stderr
        assert "cannot change" in refused.stderr
    assert patch({"serviceCIDR": "10.112.0.0/12", "dns": {"servers": ["10.112.0.10"]}}).returncode == 0


# --- presentation ------------------------------------------------------------------------------


def test_explain_shows_the_descriptions(cluster: ControlPlane) -> None:
    def explain() -> str:
        result = cluster.kubectl("explain", "windowsnode.spec", check=False)
        return result.stdout if result.returncode == 0 else ""

    text = poll("kubectl explain windowsnode.spec", explain)
    flat = " ".join(text.split())
    assert "Which host to turn into a node and how." in flat
    assert "DNS name or IP address at which winnode reaches the host over WinRM." in flat
    assert re.search(r"address\s+<string> -required-", text)
    winrm = " ".join(cluster.kubectl("explain", "wn.spec.winrm.auth").stdout.split())
    assert "Defaults to ntlm." in winrm
    assert "certificate" in winrm
    network = " ".join(cluster.kubectl("explain", "windowsnetwork.spec.clusterCIDR").stdout.split())
    assert "Cannot change." in network


def _table(text: str) -> list[list[str]]:
    """Rows of kubectl's table output, split on runs of 2+ spaces (column names may hold one space)."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines() if line.strip()]


def test_printer_columns(cluster: ControlPlane, cleanup: list[str]) -> None:
    node, network = f"{PREFIX}-printer", f"{PREFIX}-printer"
    create(cluster, obj("WindowsNode", node, {**NODE_SPEC, "network": network}))
    cleanup.append(f"wn/{node}")
    create(cluster, obj("WindowsNetwork", network, NETWORK_SPEC))
    cleanup.append(f"wnet/{network}")

    before = _table(cluster.kubectl("get", "wn", node).stdout)
    assert before[0] == ["NAME", "PHASE", "VERSION", "NODE", "ADDRESS", "AGE"]
    assert before[1][:2] == [node, "192.0.2.10"]  # empty status columns print nothing

    status = {"phase": "Ready", "nodeName": "win-printer", "installed": {"kubelet": "v1.37.2"}}
    cluster.kubectl(
        "patch", "wn", node, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status})
    )
    after = _table(cluster.kubectl("get", "wn", node).stdout)
    assert after[0] == ["NAME", "PHASE", "VERSION", "NODE", "ADDRESS", "AGE"]
    assert after[1][:5] == [node, "Ready", "v1.37.2", "win-printer", "192.0.2.10"]
    assert re.fullmatch(r"\d+[smhd]", after[1][5])

    wide = _table(cluster.kubectl("get", "wn", node, "-o", "wide").stdout)
    assert wide[0] == [
        "NAME", "PHASE", "VERSION", "NODE", "ADDRESS", "NETWORK", "OS BUILD", "UPGRADE", "TARGET", "FAILED",
        "PAUSED", "AGE",
    ]  # fmt: skip
    assert wide[1][-2] == "true"  # spec.paused of NODE_SPEC, before AGE (empty columns print nothing)

    cluster.kubectl(
        "patch",
        "wnet",
        network,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"nodesApplied": 1}}',
    )
    nets = _table(cluster.kubectl("get", "wnet", network).stdout)
    assert nets[0] == ["NAME", "MODE", "CLUSTER CIDR", "NODES", "AGE"]
    assert nets[1][:4] == [network, "overlay", "10.244.0.0/16", "1"]


def test_status_is_validated_too(cluster: ControlPlane, cleanup: list[str]) -> None:
    name = f"{PREFIX}-status"
    create(cluster, obj("WindowsNode", name, NODE_SPEC))
    cleanup.append(f"wn/{name}")
    condition = {
        "type": "Reachable",
        "status": "True",
        "reason": "Connected",
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    patch = {"status": {"phase": "Ready", "conditions": [condition], "kopf": {"progress": {}}}}
    cluster.kubectl("patch", "wn", name, "--subresource=status", "--type=merge", "-p", json.dumps(patch))
    stored = json.loads(cluster.kubectl("get", "wn", name, "-o", "json").stdout)["status"]
    assert stored["conditions"] == [condition]
    assert "kopf" in stored  # status is open for kopf's own fields

    bad = cluster.kubectl(
        "patch",
        "wn",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Dancing"}}',
        check=False,
    )
    assert bad.returncode != 0
    assert "status.phase" in bad.stderr
    assert "Unsupported value" in bad.stderr


def test_field_selector_on_network(cluster: ControlPlane, cleanup: list[str]) -> None:
    for suffix, network in (("a", f"{PREFIX}-sel-1"), ("b", f"{PREFIX}-sel-2")):
        create(cluster, obj("WindowsNode", f"{PREFIX}-sel-{suffix}", {**NODE_SPEC, "network": network}))
        cleanup.append(f"wn/{PREFIX}-sel-{suffix}")
    names = cluster.kubectl(
        "get",
        "wn",
        f"--field-selector=spec.network={PREFIX}-sel-2",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ).stdout.split()
    assert names == [f"{PREFIX}-sel-b"]


# --- access ------------------------------------------------------------------------------------


def test_user_without_rbac_is_forbidden(cluster: ControlPlane) -> None:
    nobody = cluster.user_kubeconfig("nobody")
    result = cluster.kubectl("get", "wn", kubeconfig=nobody, check=False)
    assert result.returncode != 0
    assert "Forbidden" in result.stderr
    assert 'cannot list resource "windowsnodes"' in result.stderr


# --- the models and the apiserver agree ----------------------------------------------------------

ADDRESSES = [
    "10.1.2.3",
    "999.1.2.3",
    "010.1.2.3",
    "1.2.3",
    "2001:db8::7",
    "::ffff:10.1.2.3",
    "fe80::1%eth0",
    "win-01",
    "WIN-01.Corp.Example",
    "-win",
    "win_01",
    "a" * 64,
    "win..corp",
]
CIDRS = [
    "10.0.0.0/8",
    "10.0.0.1/8",
    "10.0.0.0/08",
    "010.0.0.0/8",
    "10.0.0.0/33",
    "10.0.0.0",
    "fd00::/64",
    "64:ff9b::1.2.3.0/120",
    "::ffff:1.2.3.4/128",
    " 10.0.0.0/8",
]


def _accepted(cluster: ControlPlane, body: dict[str, Any]) -> bool:
    return bool(create(cluster, body, dry_run=True, check=False).returncode == 0)


def _model_accepts(model: Any, spec: dict[str, Any]) -> bool:
    try:
        model.model_validate(spec)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("address", ADDRESSES)
def test_address_checks_agree(cluster: ControlPlane, address: str) -> None:
    spec = {**NODE_SPEC, "address": address}
    assert _accepted(cluster, obj("WindowsNode", f"{PREFIX}-agree", spec)) == _model_accepts(
        WindowsNodeSpec, spec
    )


@pytest.mark.parametrize("cidr", CIDRS)
def test_cidr_checks_agree(cluster: ControlPlane, cidr: str) -> None:
    spec = {**NETWORK_SPEC, "outboundNATExceptions": [cidr]}
    assert _accepted(cluster, obj("WindowsNetwork", f"{PREFIX}-agree", spec)) == _model_accepts(
        WindowsNetworkSpec, spec
    )
