"""`winnode render`: every script of a WindowsNode's configure, redacted, each one valid PowerShell."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
import tree_sitter_powershell as tsp
import yaml
from tree_sitter import Language, Parser

from winnode.cli import main
from winnode.host import actions as A
from winnode.host.protocol import HEADER_PREFIX, extract_params, parse_header
from winnode.lifecycle.plan import PLACEHOLDER_TOKEN, UNKNOWN_SHA256, PlanContext, PlanError, configure_plan
from winnode.network.cni_plugins import CNI_PLUGINS, CNI_PLUGINS_VERSION

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NODE = EXAMPLES / "windowsnode.yaml"
NETWORK = EXAMPLES / "windowsnetwork-overlay.yaml"
PARSER = Parser(Language(tsp.language()))
CA = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def render_output(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["render", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def split_scripts(out: str) -> list[str]:
    """The scripts in the output: each starts at its header line and ends before the next step banner."""
    scripts: list[str] = []
    for block in re.split(r"\n# ===== (?:step \d+/\d+|then every drift check): [^\n]*=====\n", out)[1:]:
        start = block.index(HEADER_PREFIX)
        scripts.append(block[start:])
    return scripts


def node_doc(**spec: Any) -> dict[str, Any]:
    doc = yaml.safe_load(NODE.read_text())
    doc["spec"].update(spec)
    return doc


def test_prints_every_configure_script_redacted_and_parseable(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = render_output(
        capsys, "-f", str(NODE), "-f", str(NETWORK), "--kubernetes-version", "v1.37.2"
    )
    assert code == 0, err
    scripts = split_scripts(out)
    actions = [parse_header(s)[0] for s in scripts]
    assert actions[0] == "facts"
    for needed in (
        "ensure_directories",
        "fetch_file",
        "write_file",
        "hns_network_ensure",
        "service_ensure",
        "firewall_rule_ensure",
        "service_start",
    ):
        assert needed in actions
    assert out.startswith("# winnode render: WindowsNode win-01 -> Node win-01, Kubernetes v1.37.2")
    # The configure scripts, then the one read every drift check starts with, covering what they set up.
    assert f": {len(scripts) - 1} scripts, then one read per drift check" in out.splitlines()[0]
    assert actions[-1] == "observe"
    assert "observe" not in actions[:-1]
    observed = parse_header(scripts[-1])[1]
    written = {
        parse_header(s)[1]["path"] for s in scripts if parse_header(s)[0] in ("fetch_file", "write_file")
    }
    assert set(observed["files"]) == written - {"C:\\k\\bootstrap-kubelet.conf"}
    assert set(observed["services"]) == {"kubelet", "kube-proxy"}
    for script in scripts:
        tree = PARSER.parse(script.encode())
        assert not tree.root_node.has_error
        action, params = parse_header(script)
        assert extract_params(script) == params
        # Every script carries parameters valid for its action (redacted text is still a string).
        assert A.params_for(action, params).action == action
    fetched = [parse_header(s)[1] for s in scripts if parse_header(s)[0] == "fetch_file"]
    assert {p["url"] for p in fetched} == {
        "https://dl.k8s.io/v1.37.2/bin/windows/amd64/kubelet.exe",
        "https://dl.k8s.io/v1.37.2/bin/windows/amd64/kube-proxy.exe",
        "https://dl.k8s.io/v1.37.2/bin/windows/amd64/kube-log-runner.exe",
        *(f"https://dl.k8s.io/cni-plugins/{CNI_PLUGINS_VERSION}/windows/amd64/{p}" for p in CNI_PLUGINS),
    }
    services = {
        params["name"]: params for action, params in map(parse_header, scripts) if action == "service_ensure"
    }
    kubelet = services["kubelet"]["binary_path"]
    for flag in (
        "--windows-service",
        "--config=",
        "--bootstrap-kubeconfig=",
        "--kubeconfig=",
        "--cert-dir=",
        "--hostname-override=win-01",
        "--v=2",
    ):
        assert flag in kubelet
    assert services["kubelet"]["dependencies"] == ["containerd"]
    firewall = [parse_header(s)[1] for s in scripts if parse_header(s)[0] == "firewall_rule_ensure"]
    assert any(rule["local_port"] == 10250 and rule["protocol"] == "TCP" for rule in firewall)


def test_bootstrap_kubeconfig_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = render_output(capsys, "-f", str(NODE), "--kubernetes-version", "v1.37.2")
    assert code == 0
    secret_writes = [s for s in split_scripts(out) if parse_header(s)[1].get("secret") is True]
    assert len(secret_writes) == 1
    params = parse_header(secret_writes[0])[1]
    assert params["path"].endswith("bootstrap-kubelet.conf")
    assert params["content"] == "<secret:content>"
    assert extract_params(secret_writes[0])["content"] == "<secret:content>"
    # The readable copy above the script shows the kubeconfig with its token redacted.
    assert "#       token: <redacted>" in out
    assert PLACEHOLDER_TOKEN not in out
    assert "# note: WindowsNetwork 'overlay' not given" in out


def test_list_and_placeholders(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(CA)
    code, out, _ = render_output(
        capsys,
        "-f",
        str(NODE),
        "--kubernetes-version",
        "v1.36.0",
        "--api-server",
        "https://10.0.0.1:6443",
        "--ca-file",
        str(ca),
        "--subnet",
        "10.244.7.0/24",
        "--list",
    )
    assert code == 0
    assert HEADER_PREFIX not in out
    lines = [line for line in out.splitlines() if re.match(r"^\s*\d+\. ", line)]
    assert lines[0].strip().startswith("1. read host facts")
    assert "[facts, read-only]" in lines[0]
    assert any("10.244.7.0/24" in line for line in lines)
    assert "apiserver URL" not in out
    assert "cluster CA shown" not in out


def test_reads_stdin_and_picks_the_node(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = node_doc(kubernetesVersion="v1.37.1")
    second = node_doc(address="192.168.10.22")
    second["metadata"]["name"] = "win-02"
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump_all([first, second])))
    code, _, err = render_output(capsys, "-f", "-")
    assert code == 1
    assert "found 2 WindowsNode" in err
    assert "--node" in err
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump_all([first, second])))
    code, out, _ = render_output(capsys, "-f", "-", "--node", "win-01", "--list")
    assert code == 0
    assert "Kubernetes v1.37.1" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-f", str(NETWORK)], "found 0 WindowsNode"),
        (["-f", "/no/such/file.yaml"], "cannot read"),
    ],
)
def test_errors_are_reported_not_raised(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = render_output(capsys, *args)
    assert code == 1
    assert message in err
    assert out == ""


def test_readme_command_works_without_a_version_and_shows_file_contents(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from winnode.lifecycle.versions import NEWEST_KNOWN

    code, out, err = render_output(capsys, "-f", str(NODE))
    assert code == 0, err
    assert f"Kubernetes {NEWEST_KNOWN}" in out
    assert f"# note: spec.kubernetesVersion not set: planned for {NEWEST_KNOWN}, the newest version" in out
    # Non-secret files in full, for review: kubelet, kube-proxy and CNI configuration.
    assert "# content of C:\\k\\kubelet-config.yaml:\n#   apiVersion: kubelet.config.k8s.io/v1beta1" in out
    assert (
        "# content of C:\\k\\kube-proxy-config.yaml:\n#   apiVersion: kubeproxy.config.k8s.io/v1alpha1" in out
    )
    assert "10-winnode.conf:\n#   {" in out
    assert "#   cgroupsPerQOS: false" in out


def test_invalid_node_is_explained(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = node_doc(address="not an address!")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    code, _, err = render_output(capsys, "-f", str(path), "--kubernetes-version", "v1.37.2")
    assert code == 1
    assert "the WindowsNode is not valid" in err
    assert "address" in err


def test_plan_is_a_pure_function_of_its_inputs() -> None:
    doc = node_doc(
        kubernetesVersion="v1.37.2",
        artifacts={"baseURL": "https://mirror.example/k8s", "sha256": {"kubelet.exe": "AB" * 32}},
    )
    network = yaml.safe_load(NETWORK.read_text())
    context = PlanContext(
        api_server="https://10.0.0.1:6443", ca_pem=CA, bootstrap_token="tok123.0123456789abcdef"
    )
    plan = configure_plan(doc, network=network, context=context)
    assert plan == configure_plan(doc, network=network, context=context)
    assert plan.version == "v1.37.2"
    assert isinstance(plan.steps[0].params, A.FactsParams)
    fetches = {p.params.url: p.params for p in plan.steps if isinstance(p.params, A.FetchFileParams)}
    kubelet = fetches["https://mirror.example/k8s/v1.37.2/bin/windows/amd64/kubelet.exe"]
    assert kubelet.sha256 == "ab" * 32
    proxy = fetches["https://mirror.example/k8s/v1.37.2/bin/windows/amd64/kube-proxy.exe"]
    assert proxy.sha256 == UNKNOWN_SHA256
    assert any("kube-proxy.exe unknown offline" in note for note in plan.notes)
    bootstrap = next(
        p.params for p in plan.steps if isinstance(p.params, A.WriteFileParams) and p.params.secret
    )
    assert "tok123.0123456789abcdef" in bootstrap.content
    assert "https://10.0.0.1:6443" in bootstrap.content
    assert "tok123" not in repr(context)


def test_plan_errors() -> None:
    with pytest.raises(PlanError, match="WindowsNetwork is not valid"):
        configure_plan(node_doc(kubernetesVersion="v1.37.2"), network={"spec": {"mode": "token-ring"}})
