from __future__ import annotations

import argparse
import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from winnode.api import (
    WINDOWS_NETWORK,
    WINDOWS_NODE,
    ConditionStatus,
    NetworkMode,
    NodePhase,
    TaintEffect,
    VXLANConfig,
    WindowsNetwork,
    WindowsNetworkSpec,
    WindowsNetworkStatus,
    WindowsNode,
    WindowsNodeConditionType,
    WindowsNodeSpec,
    WindowsNodeStatus,
    WinRMAuth,
    WinRMScheme,
    find_condition,
    remove_condition,
    set_condition,
)
from winnode.api.common import parse_cidr, parse_ip
from winnode.deploy import crdgen
from winnode.settings import API_GROUP, API_VERSION

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

NODE_SPEC: dict[str, Any] = {
    "address": "192.168.10.21",
    "network": "overlay",
    "winrm": {"credentialsSecretRef": {"namespace": "winnode-system", "name": "win-01-winrm"}},
}
NETWORK_SPEC: dict[str, Any] = {
    "mode": "overlay",
    "clusterCIDR": "10.244.0.0/16",
    "serviceCIDR": "10.96.0.0/12",
}


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


# --- defaults and names ------------------------------------------------------------------------


def test_node_defaults() -> None:
    spec = WindowsNodeSpec.model_validate(NODE_SPEC)
    assert spec.winrm.scheme is WinRMScheme.HTTPS
    assert spec.winrm.auth is WinRMAuth.NTLM
    assert spec.winrm.effective_port == 5986
    assert spec.winrm.insecure_skip_verify is False
    assert spec.winrm.ca_bundle is None
    assert [(t.key, t.value, t.effect) for t in spec.taints] == [("os", "windows", TaintEffect.NO_SCHEDULE)]
    assert spec.kubelet.max_pods == 110
    assert spec.kubelet.extra_args == {}
    assert spec.paused is False
    assert spec.node_name is None
    assert spec.kubernetes_version is None
    assert spec.artifacts is None


def test_default_taints_are_not_shared_between_objects() -> None:
    a = WindowsNodeSpec.model_validate(NODE_SPEC)
    b = WindowsNodeSpec.model_validate(NODE_SPEC)
    a.taints.clear()
    assert len(b.taints) == 1


def test_winrm_port_follows_scheme() -> None:
    http = WindowsNodeSpec.model_validate(with_changes(NODE_SPEC, {"winrm": {"scheme": "http"}}))
    assert http.winrm.effective_port == 5985
    explicit = WindowsNodeSpec.model_validate(with_changes(NODE_SPEC, {"winrm": {"port": 15986}}))
    assert explicit.winrm.effective_port == 15986


def test_network_defaults() -> None:
    spec = WindowsNetworkSpec.model_validate(NETWORK_SPEC)
    assert spec.mode is NetworkMode.OVERLAY
    assert spec.node_subnet_prefix_length == 24
    assert spec.vxlan is None
    assert spec.effective_vxlan == VXLANConfig(vni=4096, port=4789)
    l2 = WindowsNetworkSpec.model_validate({**NETWORK_SPEC, "mode": "l2bridge"})
    assert l2.effective_vxlan is None


def test_node_name_defaults_to_metadata_name() -> None:
    node = WindowsNode.model_validate({"metadata": {"name": "win-01"}, "spec": NODE_SPEC})
    assert node.node_name == "win-01"
    assert node.api_version == f"{API_GROUP}/{API_VERSION}"
    assert node.kind == "WindowsNode"
    renamed = WindowsNode.model_validate(
        {"metadata": {"name": "win-01"}, "spec": {**NODE_SPEC, "nodeName": "w1"}}
    )
    assert renamed.node_name == "w1"


def test_wire_names_are_camel_case_with_kubernetes_acronyms() -> None:
    spec = WindowsNodeSpec.model_validate(
        with_changes(
            NODE_SPEC,
            {
                "nodeName": "win-01",
                "kubernetesVersion": "v1.37.2",
                "artifacts": {"baseURL": "https://mirror.example/k8s", "sha256": {"kubelet.exe": "a" * 64}},
                "winrm": {"caBundle": "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n"},
                "kubelet": {"extraArgs": {"v": "2"}, "systemReserved": {"cpu": "500m"}, "maxPods": 50},
            },
        )
    )
    wire = spec.to_dict()
    assert set(wire) >= {
        "address",
        "nodeName",
        "network",
        "winrm",
        "kubernetesVersion",
        "artifacts",
        "kubelet",
    }
    assert set(wire["winrm"]) == {
        "scheme",
        "auth",
        "credentialsSecretRef",
        "caBundle",
        "insecureSkipVerify",
        "trustOnFirstUse",
    }
    assert set(wire["artifacts"]) == {"baseURL", "sha256"}
    assert set(wire["kubelet"]) == {"extraArgs", "systemReserved", "maxPods"}

    network = WindowsNetworkSpec.model_validate(
        {**NETWORK_SPEC, "adapterName": "Ethernet 2", "outboundNATExceptions": ["192.168.0.0/16"]}
    ).to_dict()
    assert {
        "clusterCIDR",
        "serviceCIDR",
        "nodeSubnetPrefixLength",
        "adapterName",
        "outboundNATExceptions",
    } <= set(network)

    status = WindowsNodeStatus.model_validate(
        {
            "observedGeneration": 3,
            "nodeName": "win-01",
            "installed": {"kubelet": "v1.37.2", "kubeProxy": "v1.37.2"},
            "host": {"osBuild": 20348, "osUBR": 2762, "containerdVersion": "2.1.4", "rebootPending": False},
            "lastError": "boom",
            "leftOnHost": ["service kubelet"],
        }
    )
    assert status.host is not None
    assert status.host.os_ubr == 2762
    wire_status = status.to_dict()
    assert set(wire_status["host"]) == {"osBuild", "osUBR", "containerdVersion", "rebootPending", "addresses"}
    assert wire_status["installed"] == {"kubelet": "v1.37.2", "kubeProxy": "v1.37.2"}
    assert {"observedGeneration", "nodeName", "lastError", "leftOnHost"} <= set(wire_status)


def test_python_names_are_accepted_too() -> None:
    spec = WindowsNetworkSpec(
        mode=NetworkMode.L2BRIDGE,
        cluster_cidr="10.244.0.0/16",
        service_cidr="10.96.0.0/12",
        outbound_nat_exceptions=["192.168.0.0/16"],
    )
    assert spec.to_dict()["clusterCIDR"] == "10.244.0.0/16"
    assert WindowsNetworkSpec.model_validate(spec.to_dict()) == spec


def test_spec_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="adress"):
        WindowsNodeSpec.model_validate({**NODE_SPEC, "adress": "x"})


def test_status_ignores_fields_of_others() -> None:
    status = WindowsNodeStatus.model_validate({"phase": "Ready", "kopf": {"progress": {"h": {"retries": 1}}}})
    assert status.phase is NodePhase.READY
    net = WindowsNetworkStatus.model_validate({"nodesApplied": 2, "somethingNew": True})
    assert net.nodes_applied == 2


def test_all_phases_and_condition_types_present() -> None:
    assert [p.value for p in NodePhase] == [
        "Pending",
        "Connecting",
        "Preparing",
        "Installing",
        "Joining",
        "Ready",
        "Upgrading",
        "Draining",
        "Deconfiguring",
        "Degraded",
        "Failed",
    ]
    assert {
        "Reachable",
        "Authenticated",
        "PrerequisitesMet",
        "BinariesInstalled",
        "ServicesRunning",
        "NetworkConfigured",
        "NodeRegistered",
        "NodeReady",
        "UpgradeBlocked",
        "DrainBlocked",
        "UpgradeFailed",
    } <= {t.value for t in WindowsNodeConditionType}


# --- round trips and examples ------------------------------------------------------------------


def _example_objects() -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        objs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return objs


def test_examples_exist() -> None:
    kinds = {o["kind"] for o in _example_objects()}
    assert {"WindowsNode", "WindowsNetwork", "Secret"} <= kinds


@pytest.mark.parametrize(
    "obj",
    [o for o in _example_objects() if o["kind"] in ("WindowsNode", "WindowsNetwork")],
    ids=lambda o: f"{o['kind']}/{o['metadata']['name']}",
)
def test_examples_validate_and_round_trip(obj: dict[str, Any]) -> None:
    model = {"WindowsNode": WindowsNode, "WindowsNetwork": WindowsNetwork}[obj["kind"]]
    parsed = model.model_validate(obj)
    again = model.model_validate(parsed.to_dict())
    assert again == parsed
    # Nothing the example says is lost on the way through the model.
    assert _contains(parsed.to_dict()["spec"], obj["spec"])


def _contains(big: Any, small: Any) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _contains(big[k], v) for k, v in small.items())
    return bool(big == small)


def test_example_node_references_example_network_and_secret() -> None:
    objs = _example_objects()
    node = next(o for o in objs if o["kind"] == "WindowsNode")
    network = next(o for o in objs if o["kind"] == "WindowsNetwork")
    secret = next(o for o in objs if o["kind"] == "Secret")
    assert node["spec"]["network"] == network["metadata"]["name"]
    ref = node["spec"]["winrm"]["credentialsSecretRef"]
    assert ref == {"namespace": secret["metadata"]["namespace"], "name": secret["metadata"]["name"]}
    assert "placeholder" in secret["stringData"]["password"].lower()


def test_full_object_round_trip_with_status() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    node = WindowsNode.model_validate({"metadata": {"name": "win-01", "generation": 4}, "spec": NODE_SPEC})
    node.status.phase = NodePhase.READY
    node.status.conditions = set_condition(
        [], WindowsNodeConditionType.NODE_READY, True, "KubeletReady", now=now
    )
    wire = node.to_dict()
    assert wire["apiVersion"] == "winnode.io/v1alpha1"
    assert wire["status"]["conditions"] == [
        {
            "type": "NodeReady",
            "status": "True",
            "reason": "KubeletReady",
            "message": "",
            "lastTransitionTime": "2026-01-02T03:04:05Z",
        }
    ]
    assert WindowsNode.model_validate(json.loads(json.dumps(wire))) == node


def test_wrong_kind_or_version_is_refused() -> None:
    with pytest.raises(ValidationError, match="kind\n  Input should be 'WindowsNode'"):
        WindowsNode.model_validate({"kind": "WindowsNetwork", "metadata": {"name": "x"}, "spec": NODE_SPEC})
    with pytest.raises(ValidationError, match=r"apiVersion must be winnode\.io/v1alpha1"):
        WindowsNode.model_validate(
            {"apiVersion": "winnode.io/v1", "metadata": {"name": "x"}, "spec": NODE_SPEC}
        )


# --- validation mirrored from the CRD ----------------------------------------------------------

INVALID_NODE_SPECS = [
    ("address-garbage", {"address": "not a host!"}, "neither a DNS name nor an IP"),
    ("address-bad-ipv4", {"address": "999.1.2.3"}, "neither a DNS name nor an IP"),
    ("address-zone", {"address": "fe80::1%eth0"}, "neither a DNS name nor an IP"),
    ("node-name-uppercase", {"nodeName": "Win_01"}, "node_name|nodeName"),
    ("network-missing", {"network": None}, "network"),
    ("port-range", {"winrm": {"port": 70000}}, "port"),
    ("http-basic", {"winrm": {"scheme": "http", "auth": "basic"}}, "scheme http is only allowed"),
    (
        "http-ca",
        {"winrm": {"scheme": "http", "caBundle": "-----BEGIN CERTIFICATE-----x"}},
        "only applies to scheme https",
    ),
    (
        "ca-and-skip",
        {"winrm": {"caBundle": "-----BEGIN CERTIFICATE-----x", "insecureSkipVerify": True}},
        "not both",
    ),
    ("ca-not-pem", {"winrm": {"caBundle": "hello"}}, "ca_bundle|caBundle"),
    ("pin-not-hex", {"winrm": {"certificateSHA256": "zz" * 32}}, "certificate_sha256|certificateSHA256"),
    ("pin-and-tofu", {"winrm": {"certificateSHA256": "ab" * 32, "trustOnFirstUse": True}}, "not both"),
    ("pin-and-skip", {"winrm": {"trustOnFirstUse": True, "insecureSkipVerify": True}}, "pinned certificate"),
    ("pin-over-http", {"winrm": {"scheme": "http", "trustOnFirstUse": True}}, "https listener"),
    ("auth-unknown", {"winrm": {"auth": "digest"}}, "auth"),
    (
        "auth-credssp",
        {"winrm": {"auth": "credssp"}},
        "credssp is not supported: winnode has no CredSSP client",
    ),
    (
        "secret-missing",
        {"winrm": {"credentialsSecretRef": None}},
        "credentialsSecretRef|credentials_secret_ref",
    ),
    ("kerberos-ip", {"winrm": {"auth": "kerberos"}}, "kerberos needs address"),
    (
        "kerberos-hostname-ntlm",
        {"winrm": {"auth": "ntlm", "kerberosHostname": "win-01.corp.example"}},
        "only applies to auth kerberos",
    ),
    (
        "kerberos-hostname-ip",
        {"winrm": {"auth": "kerberos", "kerberosHostname": "10.1.2.3"}},
        "must be the host's DNS name",
    ),
    ("version-format", {"kubernetesVersion": "1.37"}, "kubernetes_version|kubernetesVersion"),
    ("base-url-scheme", {"artifacts": {"baseURL": "ftp://mirror"}}, "baseURL|base_url"),
    ("sha-not-hex", {"artifacts": {"baseURL": "https://m", "sha256": {"kubelet.exe": "zz"}}}, "sha256"),
    (
        "sha-file-path",
        {"artifacts": {"baseURL": "https://m", "sha256": {"../kubelet.exe": "a" * 64}}},
        "plain file",
    ),
    ("label-key", {"labels": {"bad key": "x"}}, "label keys must be qualified names"),
    ("label-value", {"labels": {"ok": "-bad-"}}, "labels"),
    ("taint-effect", {"taints": [{"key": "a", "effect": "Sometimes"}]}, "effect"),
    ("max-pods", {"kubelet": {"maxPods": 0}}, "max_pods|maxPods"),
    ("managed-flag", {"kubelet": {"extraArgs": {"kubeconfig": "C:/x"}}}, "winnode sets these itself"),
    ("flag-dashes", {"kubelet": {"extraArgs": {"--v": "2"}}}, "without leading dashes"),
    ("root-dir-flag", {"kubelet": {"extraArgs": {"root-dir": "D:/k"}}}, "winnode sets these itself"),
    ("log-file-flag", {"kubelet": {"extraArgs": {"log-file": "D:/k.log"}}}, "winnode sets these itself"),
    ("config-dir-flag", {"kubelet": {"extraArgs": {"config-dir": "D:/k"}}}, "winnode sets these itself"),
    ("anonymous-auth", {"kubelet": {"extraArgs": {"anonymous-auth": "true"}}}, "weaken the kubelet"),
    ("authorization-mode", {"kubelet": {"extraArgs": {"authorization-mode": "AlwaysAllow"}}}, "weaken"),
    ("percent-value", {"kubelet": {"extraArgs": {"v": "%LEVEL%"}}}, "'v': extraArgs values must not contain"),
    ("reserved-resource", {"kubelet": {"systemReserved": {"gpu": "1"}}}, "must be one of: cpu"),
    ("reserved-quantity", {"kubelet": {"systemReserved": {"cpu": "lots"}}}, "system_reserved|systemReserved"),
]


@pytest.mark.parametrize(
    ("changes", "match"), [c[1:] for c in INVALID_NODE_SPECS], ids=[c[0] for c in INVALID_NODE_SPECS]
)
def test_invalid_node_specs_are_refused(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        WindowsNodeSpec.model_validate(with_changes(NODE_SPEC, changes))


INVALID_NETWORK_SPECS = [
    ("mode", {"mode": "vlan"}, "mode"),
    ("cluster-cidr-garbage", {"clusterCIDR": "banana"}, "not a CIDR"),
    ("cluster-cidr-host-bits", {"clusterCIDR": "10.244.1.0/16"}, "no host bits"),
    ("cluster-cidr-ipv6", {"clusterCIDR": "fd00::/48"}, "not an IPv4 CIDR"),
    ("overlap", {"serviceCIDR": "10.0.0.0/8"}, "must not overlap"),
    ("prefix-too-short", {"clusterCIDR": "10.244.0.0/24"}, "longer than the clusterCIDR prefix"),
    ("prefix-range", {"nodeSubnetPrefixLength": 30}, "node_subnet_prefix_length|nodeSubnetPrefixLength"),
    ("vxlan-l2bridge", {"mode": "l2bridge", "vxlan": {}}, "only be set when mode is overlay"),
    ("vni", {"vxlan": {"vni": 1}}, "vni"),
    ("dns-server", {"dns": {"servers": ["dns.example"]}}, "not an IP address"),
    ("dns-search", {"dns": {"search": ["bad domain"]}}, "search"),
    ("nat-exception", {"outboundNATExceptions": ["10.0.0.0/33"]}, "not a CIDR"),
]


@pytest.mark.parametrize(
    ("changes", "match"), [c[1:] for c in INVALID_NETWORK_SPECS], ids=[c[0] for c in INVALID_NETWORK_SPECS]
)
def test_invalid_network_specs_are_refused(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        WindowsNetworkSpec.model_validate(with_changes(NETWORK_SPEC, changes))


@pytest.mark.parametrize(
    "address", ["10.1.2.3", "win-01", "WIN-01.corp.example", "2001:db8::7", "fe80::1", "a" * 63 + ".example"]
)
def test_valid_addresses(address: str) -> None:
    assert WindowsNodeSpec.model_validate({**NODE_SPEC, "address": address}).address == address


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("10.0.0.1", True),
        ("::1", True),
        ("::ffff:1.2.3.4", False),  # IPv4-mapped: refused by the apiserver's isIP
        ("010.0.0.1", False),
        ("fe80::1%eth0", False),
        ("", False),
    ],
)
def test_parse_ip_agrees_with_cel(text: str, ok: bool) -> None:
    assert (parse_ip(text) is not None) is ok


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("10.0.0.0/8", True),
        ("fd00::/64", True),
        ("10.0.0.1/8", False),
        ("10.0.0.0/33", False),
        ("10.0.0.0/08", False),
        ("10.0.0.0", False),
        ("10.0.0.0/", False),
    ],
)
def test_parse_cidr(text: str, ok: bool) -> None:
    assert (parse_cidr(text) is not None) is ok


# --- conditions --------------------------------------------------------------------------------


def test_set_condition_moves_transition_time_only_on_status_change() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    t1 = t0 + timedelta(minutes=5)
    t2 = t1 + timedelta(minutes=5, microseconds=123)
    conds = set_condition([], "Reachable", False, "Unreachable", "no route", now=t0)
    conds = set_condition(conds, "Authenticated", ConditionStatus.UNKNOWN, "NotTried", now=t0)
    conds = set_condition(
        conds, "Reachable", False, "Timeout", "still nothing", now=t1, observed_generation=2
    )
    reachable = find_condition(conds, "Reachable")
    assert reachable is not None
    assert reachable.last_transition_time == t0
    assert (reachable.reason, reachable.message, reachable.observed_generation) == (
        "Timeout",
        "still nothing",
        2,
    )
    conds = set_condition(conds, "Reachable", True, "Connected", now=t2)
    reachable = find_condition(conds, "Reachable")
    assert reachable is not None
    assert reachable.status is ConditionStatus.TRUE
    assert reachable.last_transition_time == t2.replace(microsecond=0)
    assert [c.type for c in conds] == ["Reachable", "Authenticated"]  # order kept
    assert [c.type for c in remove_condition(conds, "Reachable")] == ["Authenticated"]
    assert find_condition(conds, "NodeReady") is None


def test_long_condition_messages_are_cut() -> None:
    (cond,) = set_condition([], "Reachable", False, "ScriptFailed", "x" * 40000)
    assert len(cond.message) == 32768
    assert cond.message.endswith("...")


def test_condition_reason_must_be_camel_case() -> None:
    with pytest.raises(ValidationError, match="reason"):
        set_condition([], "Reachable", False, "no route to host")


# --- the generator -----------------------------------------------------------------------------


def _walk(schema: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(schema, dict):
        out.append((path, schema))
        for name, prop in schema.get("properties", {}).items():
            out.extend(_walk(prop, f"{path}.{name}"))
        if isinstance(schema.get("items"), dict):
            out.extend(_walk(schema["items"], f"{path}[]"))
        if isinstance(schema.get("additionalProperties"), dict):
            out.extend(_walk(schema["additionalProperties"], f"{path}.*"))
    return out


@pytest.mark.parametrize("resource", [WINDOWS_NODE, WINDOWS_NETWORK], ids=lambda r: r.kind)
def test_generated_schema_is_structural(resource: Any) -> None:
    schema = crdgen.openapi_schema(resource)
    for path, node in _walk(schema):
        assert not {"$ref", "anyOf", "oneOf", "allOf", "title", "$defs", "const"} & node.keys(), path
        assert "type" in node, f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        if path.count(".") >= 2 and not path.endswith("*") and not path.endswith("[]"):
            assert node.get("description"), f"{path} has no description"
    status = schema["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }


def test_generated_node_crd() -> None:
    crd = crdgen.crd(WINDOWS_NODE)
    assert crd["metadata"]["name"] == "windowsnodes.winnode.io"
    spec = crd["spec"]
    assert spec["scope"] == "Cluster"
    assert spec["names"]["shortNames"] == ["wn"]
    assert spec["names"]["categories"] == ["windows"]
    version = spec["versions"][0]
    assert version["name"] == API_VERSION
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c] == [
        "Phase",
        "Version",
        "Node",
        "Address",
        "Age",
    ]
    props = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert props["winrm"]["properties"]["scheme"]["default"] == "https"
    assert props["winrm"]["properties"]["auth"]["enum"] == [
        "ntlm",
        "kerberos",
        "credssp",
        "basic",
        "certificate",
    ]
    assert "default" not in props["winrm"]["properties"]["port"]
    assert props["taints"]["default"] == [{"key": "os", "value": "windows", "effect": "NoSchedule"}]
    assert props["kubelet"]["default"] == {}
    assert props["kubelet"]["properties"]["maxPods"] == {
        "description": "Most pods the kubelet runs at once. Defaults to 110.",
        "type": "integer",
        "default": 110,
        "minimum": 1,
        "maximum": 250,
    }
    rules = [r["fieldPath"] for r in props["winrm"]["x-kubernetes-validations"]]
    assert rules == [
        ".auth",
        ".scheme",
        ".caBundle",
        ".caBundle",
        ".insecureSkipVerify",
        ".certificateSHA256",
        ".trustOnFirstUse",
        ".kerberosHostname",
        ".kerberosHostname",
        ".insecureSkipVerify",
    ]


def test_kerberos_reaches_an_ip_address_by_its_service_principal_name() -> None:
    spec = WindowsNodeSpec.model_validate(
        with_changes(NODE_SPEC, {"winrm": {"auth": "kerberos", "kerberosHostname": "win-01.corp.example"}})
    )
    assert spec.winrm.kerberos_hostname == "win-01.corp.example"


def test_generated_network_crd() -> None:
    crd = crdgen.crd(WINDOWS_NETWORK)
    assert crd["spec"]["names"]["shortNames"] == ["wnet"]
    version = crd["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c] == [
        "Mode",
        "Cluster CIDR",
        "Nodes",
        "Age",
    ]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["mode", "clusterCIDR", "serviceCIDR"]
    vxlan = spec["properties"]["vxlan"]["properties"]
    assert (vxlan["vni"]["default"], vxlan["vni"]["minimum"], vxlan["vni"]["maximum"]) == (
        4096,
        4096,
        16777215,
    )
    assert {r["fieldPath"] for r in spec["x-kubernetes-validations"]} == {
        ".vxlan",
        ".nodeSubnetPrefixLength",
        ".serviceCIDR",
    }
    cluster_rules = [r["rule"] for r in spec["properties"]["clusterCIDR"]["x-kubernetes-validations"]]
    assert "isCIDR(self)" in cluster_rules
    assert "self == oldSelf" in cluster_rules


class _Undescribed(BaseModel):
    a: int = 1


def test_generator_refuses_what_a_crd_cannot_say() -> None:
    with pytest.raises(crdgen.SchemaError, match="non-null branches"):
        crdgen.structural(
            {"properties": {"a": {"anyOf": [{"type": "integer"}, {"type": "string"}], "description": "x"}}},
            {},
        )
    with pytest.raises(crdgen.SchemaError, match="needs a description"):
        crdgen.model_schema(_Undescribed)
    with pytest.raises(crdgen.SchemaError, match="not supported"):
        crdgen.structural({"type": "object", "patternProperties": {"^a$": {"type": "string"}}}, {})
    with pytest.raises(crdgen.SchemaError, match="format"):
        crdgen.structural({"type": "string", "format": "uuid4"}, {})
    with pytest.raises(crdgen.SchemaError, match="unresolved"):
        crdgen.structural({"$ref": "#/$defs/Nope"}, {})


def test_generator_inlines_refs_and_merges_rules() -> None:
    defs = {
        "T": {"type": "string", "title": "T", "x-kubernetes-validations": [{"rule": "a", "message": "m"}]}
    }
    field = {
        "anyOf": [{"$ref": "#/$defs/T"}, {"type": "null"}],
        "default": None,
        "description": "d",
        "x-kubernetes-validations": [{"rule": "b", "message": "n"}],
    }
    assert crdgen.structural(field, defs) == {
        "type": "string",
        "description": "d",
        "x-kubernetes-validations": [{"rule": "a", "message": "m"}, {"rule": "b", "message": "n"}],
    }


def test_output_is_deterministic_and_cli_prints_all(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert crdgen.render_all() == crdgen.render_all()
    assert crdgen.run(argparse.Namespace(write=None)) == 0
    printed = capsys.readouterr().out
    docs = [d for d in yaml.safe_load_all(printed) if d]
    assert [d["metadata"]["name"] for d in docs] == ["windowsnodes.winnode.io", "windowsnetworks.winnode.io"]
    assert crdgen.run(argparse.Namespace(write=tmp_path / "out")) == 0
    written = {p.name: p.read_text() for p in (tmp_path / "out").iterdir()}
    assert written == crdgen.render_all()


def test_cli_table_knows_the_subcommand() -> None:
    from winnode import cli

    args = cli.build_parser().parse_args(["crds", "--write", "somewhere"])
    assert args._module == "winnode.deploy.crdgen"
    assert args.write == Path("somewhere")
