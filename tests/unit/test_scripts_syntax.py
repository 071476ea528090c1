"""Every script winnode can send is well-formed PowerShell and follows the script contract."""

from __future__ import annotations

import re

import pytest
import tree_sitter_powershell as tsp
from tree_sitter import Language, Node, Parser

from winnode.host import actions as A
from winnode.host.protocol import (
    HEADER_PREFIX,
    PARAMS_VARIABLE,
    RESULT_PREFIX,
    SECRETS_MARKER,
    extract_params,
    fill_secrets,
    format_result,
    parse_header,
    parse_result,
    split_stdin,
)
from winnode.host.scripts import (
    PRELUDE,
    TemplateError,
    action_body,
    placeholder_params,
    render,
    template_names,
    template_text,
)
from winnode.host.transport import BOOTSTRAP, BOOTSTRAP_COMMAND
from winnode.network.hns import HnsHost, network_params

# The HNS of a fully updated Server 2022 host (the emulator's default build).
HNS_2022 = HnsHost(version=(13, 2))

PARSER = Parser(Language(tsp.language()))

SAMPLES: dict[str, A.Params] = {
    "facts": A.FactsParams(),
    "ensure_directories": A.EnsureDirectoriesParams(paths=["C:\\k", "C:\\var\\lib\\kubelet\\pki"]),
    "fetch_file": A.FetchFileParams(
        url="https://dl.k8s.io/v1.37.2/bin/windows/amd64/kubelet.exe",
        path="C:\\k\\kubelet.exe",
        sha256="ab" * 32,
    ),
    "copy_file": A.CopyFileParams(
        source="C:\\k\\staging\\kubelet.exe", path="C:\\k\\kubelet.exe", sha256="cd" * 32
    ),
    "write_file": A.WriteFileParams(
        path="C:\\k\\bootstrap-kubelet.conf", content="apiVersion: v1\nkind: Config\n", secret=True
    ),
    "stat_files": A.StatFilesParams(paths=["C:\\k\\kubelet.exe", "C:\\k\\missing"]),
    "remove_path": A.RemovePathParams(path="C:\\k", recurse=True),
    "service_ensure": A.ServiceEnsureParams(
        name="kubelet",
        binary_path='"C:\\k\\kubelet.exe" --windows-service --config=C:\\k\\kubelet-config.yaml',
        display_name="Kubernetes kubelet",
        description="Managed by winnode (WindowsNode win-01): Kubernetes node agent.",
        dependencies=["containerd"],
    ),
    "service_start": A.ServiceStartParams(name="kubelet", timeout_s=90),
    "service_stop": A.ServiceStopParams(name="kubelet"),
    "service_remove": A.ServiceRemoveParams(name="kube-proxy"),
    "service_query": A.ServiceQueryParams(names=["kubelet", "kube-proxy", "containerd"]),
    "hns_network_ensure": network_params(
        HNS_2022,
        name="winnode",
        type_=A.HnsNetworkType.OVERLAY,
        prefix="10.244.1.0/24",
        gateway="10.244.1.1",
        adapter="Ethernet",
        vsid=4096,
        vxlan_port=4789,
    ),
    "hns_network_remove": A.HnsNetworkRemoveParams(name="winnode"),
    "hns_network_query": A.HnsNetworkQueryParams(names=["winnode"]),
    "hns_routes_sync": A.HnsRoutesSyncParams(
        network="winnode",
        managed_prefixes=["10.244.0.0/16"],
        remote_subnet_routes=[
            A.RemoteSubnetRoute(
                destination_prefix="10.244.2.0/24",
                provider_address="10.1.2.4",
                distributed_router_mac="0E-2A-0A-01-02-04",
                isolation_id=4096,
            )
        ],
        host_route=True,
        net_routes=[A.NetRoute(destination_prefix="10.244.3.0/24", next_hop="10.1.2.5")],
        bridge_endpoint_ip="10.244.1.2",
    ),
    "firewall_rule_ensure": A.FirewallRuleEnsureParams(
        name="winnode-kubelet", display_name="Kubernetes kubelet API", protocol="TCP", local_port=10250
    ),
    "firewall_rule_remove": A.FirewallRuleRemoveParams(name="winnode-kubelet"),
    "defender_exclusions_ensure": A.DefenderExclusionsEnsureParams(
        processes=["C:\\k\\kubelet.exe", "C:\\k\\kube-proxy.exe"]
    ),
    "reboot": A.RebootParams(reason="winnode: the Containers feature needs a restart", delay_s=10),
    "host_owner_query": A.HostOwnerQueryParams(),
    "probe": A.ProbeParams(
        paths=["C:\\Program Files\\containerd\\cni\\bin"],
        tcp=["10.0.0.1:6443", "[fd00::1]:6443"],
        http=["https://dl.k8s.io/v1.37.2/bin/windows/amd64/kubelet.exe.sha256"],
    ),
    "observe": A.ObserveParams(
        files=["C:\\k\\kubelet.exe", "C:\\k\\missing"],
        services=["kubelet", "kube-proxy"],
        hns_networks=["External", "winnode"],
        firewall_rules=["winnode-kubelet"],
        defender_processes=["C:\\k\\kubelet.exe"],
    ),
    "host_owner_set": A.HostOwnerSetParams(
        owner_uid="0b6f3a52-5d0e-4c43-9f0c-0d0d7f4ae2a1", owner_name="win-01", expected_uid=None
    ),
}


def syntax_problems(source: str) -> list[str]:
    """ERROR and MISSING nodes of the tree-sitter parse, with the line they are on."""
    data = source.encode("utf-8")
    tree = PARSER.parse(data)
    lines = data.split(b"\n")
    problems: list[str] = []

    def visit(node: Node) -> None:
        if node.type == "ERROR" or node.is_missing:
            row = node.start_point[0]
            kind = f"MISSING {node.type}" if node.is_missing else "ERROR"
            problems.append(f"{kind} at line {row + 1}: {lines[row][:120].decode(errors='replace')!r}")
        for child in node.children:
            visit(child)

    visit(tree.root_node)
    if tree.root_node.has_error and not problems:
        problems.append("tree has errors")
    return problems


def test_every_action_has_a_sample_and_a_template() -> None:
    assert set(SAMPLES) == set(A.ACTIONS)
    names = template_names()
    actions = {n.removesuffix(".ps1") for n in names if not n.startswith("_")}
    assert actions == set(A.ACTIONS), "one template per action, and no template without an action"
    assert {n for n in names if n.startswith("_")} == {
        PRELUDE,
        "_services.ps1",
        "_hns.ps1",
        "_owner.ps1",
        "_facts.ps1",
        "_files.ps1",
        "_firewall.ps1",
        "_defender.ps1",
    }


def test_the_checker_sees_broken_powershell() -> None:
    assert syntax_problems("if ($true) {\n")
    assert syntax_problems("$a = 'unterminated\n")
    # The grammar's known weakness the templates avoid: a one-line param block.
    assert syntax_problems("function f { param($x) $x }\n")
    assert not syntax_problems("function f {\n    param($x)\n\n    $x\n}\n")


@pytest.mark.parametrize("action", sorted(A.ACTIONS))
def test_rendered_script_parses(action: str) -> None:
    script = render(SAMPLES[action])
    assert syntax_problems(script.text) == []
    assert syntax_problems(script.redacted()) == []


@pytest.mark.parametrize("name", template_names())
def test_each_template_file_parses_on_its_own(name: str) -> None:
    assert syntax_problems(template_text(name)) == []


def test_bootstrap_is_short_and_parses() -> None:
    assert syntax_problems(BOOTSTRAP) == []
    # cmd.exe's limit is 8191 characters; the bootstrap must never come close.
    assert len(BOOTSTRAP_COMMAND) < 2048
    assert "[Console]::OpenStandardInput()" in BOOTSTRAP
    assert SECRETS_MARKER in BOOTSTRAP
    assert BOOTSTRAP_COMMAND.startswith(
        "powershell -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand "
    )


@pytest.mark.parametrize("action", sorted(A.ACTIONS))
def test_script_layout(action: str) -> None:
    params = SAMPLES[action]
    script = render(params)
    header, params_line, rest = script.text.split("\n", 2)
    assert header.startswith(HEADER_PREFIX)
    assert params_line.startswith(f"${PARAMS_VARIABLE} = '")
    assert rest.startswith(template_text(PRELUDE))
    assert rest.endswith(action_body(action))
    assert "#winnode:include" not in script.text, "include directives are resolved"
    expected = placeholder_params(params)
    assert parse_header(script.text) == (action, expected)
    assert extract_params(script.text) == expected
    assert script.action == action
    assert script.mutating == params.mutating
    # Rendering is a pure function of the parameters (the emulator re-renders and compares).
    filled = fill_secrets(extract_params(script.text), script.secrets)
    assert render(type(params).model_validate(filled)).text == script.text


def test_mutating_flags() -> None:
    read_only = {a for a, (p, _) in A.ACTIONS.items() if not p.mutating}
    assert read_only == {
        "facts",
        "stat_files",
        "service_query",
        "hns_network_query",
        "host_owner_query",
        "probe",
        "observe",
    }
    for action, params in SAMPLES.items():
        assert render(params).mutating is (action not in read_only)


def test_script_text_holds_no_secret_and_still_follows_the_contract() -> None:
    params = A.WriteFileParams(path="C:\\k\\token", content="s3cr3t-token-value", secret=True)
    script = render(params)
    # The text PowerShell compiles (and may log) names the field; the value follows it on stdin.
    assert "s3cr3t" not in script.text
    assert parse_header(script.text)[1]["content"] == "<secret:content>"
    text, secrets = split_stdin(script.stdin.decode("utf-8"))
    assert text == script.text
    assert secrets == {"content": "s3cr3t-token-value"}
    redacted = script.redacted()
    assert "s3cr3t" not in redacted
    action, header_params = parse_header(redacted)
    assert action == "write_file"
    assert header_params["content"] == "<secret:content>"
    assert extract_params(redacted) == header_params
    assert header_params["path"] == "C:\\k\\token"
    assert syntax_problems(redacted) == []
    assert "s3cr3t" not in repr(script)
    assert script.secret_values == ("s3cr3t-token-value",)


def test_redaction_leaves_scripts_without_secrets_alone() -> None:
    script = render(SAMPLES["fetch_file"])
    assert script.redacted() == script.text
    assert script.secret_values == ()


def test_prelude_sets_up_strict_error_handling_and_the_result_helpers() -> None:
    prelude = template_text(PRELUDE)
    assert "Set-StrictMode -Version 3.0" in prelude
    assert "$ErrorActionPreference = 'Stop'" in prelude
    assert "$ProgressPreference = 'SilentlyContinue'" in prelude
    assert f"FromBase64String(${PARAMS_VARIABLE})" in prelude
    assert "ConvertFrom-Json" in prelude
    assert re.search(r"^trap \{", prelude, re.MULTILINE)
    assert "ConvertTo-Json -InputObject $Value -Compress -Depth 10" in prelude
    # The result prefix the prelude prints is the one the operator parses.
    assert f"'{RESULT_PREFIX}'" in prelude
    assert parse_result(format_result({"ok": True}) + "\r\n") == {"ok": True}


def test_templates_never_evaluate_strings_as_code() -> None:
    forbidden = re.compile(
        r"Invoke-Expression|\biex\b|\[scriptblock\]::Create|ExpandString|-EncodedCommand", re.I
    )
    for name in template_names():
        text = template_text(name)
        assert not forbidden.search(text), f"{name} evaluates text as code"
        if name != PRELUDE:
            assert PARAMS_VARIABLE not in text, f"{name} must read parameters from $P only"


def test_param_blocks_end_their_line() -> None:
    for name in template_names():
        for number, line in enumerate(template_text(name).split("\n"), start=1):
            assert not re.search(r"\bparam\(.+", line), f"{name}:{number}: put a newline after param("


def test_windows_specific_choices() -> None:
    fetch = action_body("fetch_file")
    assert "Invoke-WebRequest" in fetch
    assert "-UseBasicParsing" in fetch
    assert "Get-WinnodeFileSha256" in fetch
    assert "Start-BitsTransfer" not in fetch.split("\n", 3)[-1]
    write = action_body("write_file")
    assert "icacls.exe" in write
    assert "/inheritance:r" in write
    ensure = action_body("service_ensure")
    assert "New-Service" in ensure
    assert "'failure'" in ensure
    assert "'actions='" in ensure
    assert "Win32_Service" in ensure
    assert "HNSCall" in action_body("hns_network_ensure")
    assert "New-NetFirewallRule" in action_body("firewall_rule_ensure")
    facts = action_body("facts")
    for needle in (
        "Win32_OperatingSystem",
        "CurrentBuildNumber",
        "UBR",
        "EditionID",
        "Get-WindowsFeature",
        "containerd",
        "Get-PSDrive",
        "Get-NetIPAddress",
        "RebootPending",
        "LastBootUpTime",
    ):
        assert needle in facts, needle


def test_unknown_templates_and_foreign_params_are_refused() -> None:
    with pytest.raises(TemplateError):
        template_text("no_such_action.ps1")

    class Stray(A.Params):
        action = "stray"

    with pytest.raises(TemplateError):
        render(Stray())
