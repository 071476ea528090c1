"""The host steps against the emulator's typed host model: idempotent, safe to interrupt, and only
changing what differs. Also the desired state and command lines they are built from."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from winnode.api import WindowsNetworkSpec, WindowsNode
from winnode.host.actions import (
    EnsureDirectoriesParams,
    FetchFileParams,
    FirewallRuleEnsureParams,
    HnsNetworkEnsureParams,
    HnsNetworkQueryParams,
    HnsNetworkQueryResult,
    HostOwnerQueryParams,
    ObserveResult,
    Params,
    Result,
    ServiceEnsureParams,
    ServiceQueryParams,
    ServiceQueryResult,
    ServiceStartParams,
    ServiceState,
    StatFilesParams,
    StatFilesResult,
    WriteFileParams,
)
from winnode.host.errors import ScriptFailedError
from winnode.lifecycle import kubelet_config as kc
from winnode.lifecycle import observe, steps
from winnode.lifecycle.context import ClusterInfo
from winnode.lifecycle.status import StepFailure
from winnode.network.cni_plugins import CNI_PLUGINS, CNI_PLUGINS_VERSION
from winnode.testing.artifacts import fake_binary, sha256_hex
from winnode.testing.hostmodel import (
    ActionFailed,
    FetchError,
    HostModel,
    ServiceRecord,
    new_host_model,
    split_command_line,
)

VERSION = "v1.37.2"
BASE = "http://mirror.example/k8s"
BINARIES = {f: fake_binary(f.removesuffix(".exe"), VERSION) for f in (*kc.BINARIES, *CNI_PLUGINS)}
CLUSTER = ClusterInfo(
    server="https://10.0.0.1:6443", ca_pem="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
)
MUTATING = {"ensure_directories", "fetch_file", "write_file", "service_ensure", "service_start", "service_stop",
            "hns_network_ensure", "firewall_rule_ensure"}  # fmt: skip


class ModelHost:
    """A HostApi over the emulator's host model, raising what the real client raises."""

    def __init__(self, model: HostModel) -> None:
        self.model = model
        self.calls: list[str] = []
        self.fail_fetch_of: str | None = None

    async def run(self, params: Params) -> Result:
        self.calls.append(params.action)
        try:
            return await self.model.execute(params)
        except ActionFailed as exc:
            raise ScriptFailedError("win-01", params.action, str(exc), 1) from None

    def mutations(self) -> list[str]:
        return [c for c in self.calls if c in MUTATING]


def service(model: HostModel, name: str) -> ServiceRecord:
    record = model.service(name)
    assert record is not None, f"no service {name}"
    return record


def file_content(model: HostModel, path: str) -> bytes:
    entry = model.file(path)
    assert entry is not None, f"no file {path}"
    return entry.content


def make_model() -> HostModel:
    model = new_host_model("WIN-01", addresses=["10.1.2.3"])

    async def fetch(url: str, limit_s: float) -> bytes:
        name = url.rsplit("/", 1)[1]
        if name == host_failing["name"]:
            raise FetchError("Unable to connect to the remote server")
        return BINARIES[name]

    model.fetcher = fetch
    return model


host_failing: dict[str, str | None] = {"name": None}


@pytest.fixture(autouse=True)
def _reset() -> None:
    host_failing["name"] = None


def node(**spec: Any) -> WindowsNode:
    return WindowsNode.model_validate(
        {
            "metadata": {"name": "win-01", "uid": "u-1", "generation": 1},
            "spec": {
                "address": "10.1.2.3",
                "network": "pods",
                "winrm": {"credentialsSecretRef": {"namespace": "ns", "name": "creds"}},
                "artifacts": {"baseURL": BASE},
                **spec,
            },
        }
    )


NETWORK = WindowsNetworkSpec.model_validate(
    {
        "mode": "overlay",
        "clusterCIDR": "10.244.0.0/16",
        "serviceCIDR": "10.96.0.0/12",
        "dns": {"servers": ["10.96.0.10"]},
    }
)


def desired(token: str | None = "abcdef.0123456789abcdef", **spec: Any) -> steps.DesiredHost:
    return steps.desired_host(
        node(**spec),
        NETWORK,
        "10.244.3.0/24",
        VERSION,
        {f: sha256_hex(c) for f, c in BINARIES.items()},
        CLUSTER,
        bootstrap_token=token,
        host_address="10.1.2.3",
    )


async def install(host: ModelHost, want: steps.DesiredHost) -> list[str]:
    changes = await steps.ensure_directories(host, want)
    changes += await steps.ensure_files(host, want)
    changes += await steps.ensure_network(host, want)
    changes += await steps.ensure_firewall(host, want)
    changes += await steps.ensure_services(host, want)
    changes += await steps.start_services(host, list(kc.SERVICES))
    return changes


def test_planned_actions_follow_the_configure_order() -> None:
    actions = steps.planned_actions(desired())
    kinds = [type(a) for a in actions]
    assert kinds[0] is EnsureDirectoriesParams
    fetches = [a for a in actions if isinstance(a, FetchFileParams)]
    assert [a.url for a in fetches] == [
        f"{BASE}/{VERSION}/bin/windows/amd64/kubelet.exe",
        f"{BASE}/{VERSION}/bin/windows/amd64/kube-proxy.exe",
        f"{BASE}/{VERSION}/bin/windows/amd64/kube-log-runner.exe",
        *(f"{BASE}/cni-plugins/{CNI_PLUGINS_VERSION}/windows/amd64/{p}" for p in CNI_PLUGINS),
    ]
    assert all(a.sha256 == sha256_hex(BINARIES[a.url.rsplit("/", 1)[1]]) for a in fetches)
    writes = {a.path: a for a in actions if isinstance(a, WriteFileParams)}
    assert writes[kc.BOOTSTRAP_KUBECONFIG].secret
    assert not writes[kc.KUBELET_CONFIG].secret
    assert (
        kinds.index(HnsNetworkEnsureParams)
        < kinds.index(ServiceEnsureParams)
        < kinds.index(FirewallRuleEnsureParams)
    )
    starts = [a.name for a in actions if isinstance(a, ServiceStartParams)]
    assert starts == ["kubelet", "kube-proxy"]
    assert kc.BOOTSTRAP_KUBECONFIG not in {
        a.path for a in steps.planned_actions(desired(token=None)) if isinstance(a, WriteFileParams)
    }
    assert "DesiredFile(" in repr(desired().files[3])
    assert "abcdef" not in repr(desired().files), "the token is never in a repr"


def test_kubelet_files_and_command_line() -> None:
    want = desired(
        kubelet={
            "extraArgs": {"v": "2", "feature-gates": "A=true,B=false"},
            "systemReserved": {"memory": "2Gi"},
            "maxPods": 50,
        },
        taints=[
            {"key": "os", "value": "windows", "effect": "NoSchedule"},
            {"key": "dedicated", "effect": "NoExecute"},
        ],
    )
    files = {f.path: f for f in want.files}
    config = yaml.safe_load(files[kc.KUBELET_CONFIG].content or "")
    assert config["cgroupsPerQOS"] is False
    assert config["enforceNodeAllocatable"] == []
    assert config["resolvConf"] == ""
    assert config["containerRuntimeEndpoint"] == "npipe:////./pipe/containerd-containerd"
    assert config["registerWithTaints"] == [
        {"key": "os", "effect": "NoSchedule", "value": "windows"},
        {"key": "dedicated", "effect": "NoExecute"},
    ]
    assert config["systemReserved"] == {"memory": "2Gi"}
    assert config["maxPods"] == 50
    assert config["clusterDNS"] == ["10.96.0.10"]
    bootstrap = yaml.safe_load(files[kc.BOOTSTRAP_KUBECONFIG].content or "")
    assert bootstrap["clusters"][0]["cluster"]["server"] == CLUSTER.server
    assert bootstrap["users"][0]["user"]["token"] == "abcdef.0123456789abcdef"
    proxy = yaml.safe_load(files[kc.KUBE_PROXY_CONFIG].content or "")
    assert proxy["winkernel"] == {"networkName": "winnode", "enableDSR": False, "sourceVip": "10.244.3.2"}

    kubelet = next(s for s in want.services if s.name == "kubelet")
    runner = split_command_line(kubelet.binary_path)
    assert runner[:4] == [
        kc.KUBE_LOG_RUNNER_EXE,
        f"-log-file={kc.KUBELET_LOG}",
        f"-log-file-size={kc.LOG_FILE_SIZE}",
        f"-log-file-age={kc.LOG_FILE_AGE}",
    ]
    args = runner[4:]
    assert args[0] == kc.KUBELET_EXE
    assert "--windows-service" in args
    assert "--hostname-override=win-01" in args
    assert args[-2:] == ["--feature-gates=A=true,B=false", "--v=2"], "extra args last, sorted"
    assert kubelet.dependencies == ["containerd"]
    assert kc.is_ours(kubelet.description)


@pytest.mark.parametrize(
    "arg",
    ["plain", "with space", 'quote"inside', "trailing\\", "C:\\Program Files\\x\\", 'a\\"b', "", "tab\there"],
)
def test_quote_arg_round_trips_through_windows_splitting(arg: str) -> None:
    line = kc.command_line("C:\\Program Files\\k\\kubelet.exe", ["--a=1", arg])
    assert split_command_line(line) == ["C:\\Program Files\\k\\kubelet.exe", "--a=1", arg]


async def test_install_is_idempotent() -> None:
    model = make_model()
    host = ModelHost(model)
    want = desired()
    changes = await install(host, want)
    assert "created kubelet.exe (C:\\k\\kubelet.exe)" in changes
    assert "registered service kubelet" in changes
    assert "started service kubelet" in changes
    assert service(model, "kubelet").state is ServiceState.RUNNING
    assert model.hns_networks["winnode"].address_prefix == "10.244.3.0/24"

    host.calls.clear()
    assert await install(host, want) == []
    assert host.mutations() == [
        "ensure_directories",
        "firewall_rule_ensure",
        "firewall_rule_ensure",
    ], "a second run only reads (and re-asserts idempotent rules)"


async def test_interrupted_install_resumes_with_what_is_missing() -> None:
    model = make_model()
    host = ModelHost(model)
    want = desired()
    host_failing["name"] = "kube-proxy.exe"
    await steps.ensure_directories(host, want)
    with pytest.raises(StepFailure) as info:
        await steps.ensure_files(host, want)
    assert info.value.reason == "FetchFileFailed"
    assert "kube-proxy.exe" in info.value.message
    assert model.file(kc.KUBELET_EXE) is not None

    host_failing["name"] = None
    host.calls.clear()
    changes = await steps.ensure_files(host, want)
    assert "created kubelet.exe (C:\\k\\kubelet.exe)" not in changes, "already there: not fetched again"
    assert "created kube-proxy.exe (C:\\k\\kube-proxy.exe)" in changes
    assert "created kube-log-runner.exe (C:\\k\\kube-log-runner.exe)" in changes, "never reached before"
    assert host.calls.count("fetch_file") == 2 + len(CNI_PLUGINS), (
        "kube-proxy, kube-log-runner and the plugins"
    )


async def test_replacing_a_binary_stops_its_service_first() -> None:
    model = make_model()
    host = ModelHost(model)
    want = desired()
    await install(host, want)
    await model.stop_service("kube-proxy")
    model.write_bytes(kc.KUBE_PROXY_EXE, b"tampered")
    await model.start_service("kube-proxy")

    changes = await steps.ensure_files(host, want.without_bootstrap())
    assert changes == [
        f"stopped service kube-proxy to replace {kc.KUBE_PROXY_EXE}",
        f"replaced kube-proxy.exe ({kc.KUBE_PROXY_EXE})",
    ]
    assert file_content(model, kc.KUBE_PROXY_EXE) == BINARIES["kube-proxy.exe"]
    assert await steps.start_services(host, list(kc.SERVICES)) == ["started service kube-proxy"]


async def test_changed_service_command_line_is_updated() -> None:
    model = make_model()
    host = ModelHost(model)
    await install(host, desired())
    changed = desired(kubelet={"extraArgs": {"v": "4"}})
    changes = await steps.ensure_services(host, changed)
    assert changes == ["updated service kubelet"]
    assert service(model, "kubelet").binary_path.endswith("--v=4")
    assert service(model, "kubelet").state is ServiceState.STOPPED, (
        "stopped to apply; the start step restarts it"
    )


async def test_foreign_service_is_not_taken_over() -> None:
    model = make_model()
    model.add_system_service("kubelet", "kubelet")  # someone's own kubelet service
    host = ModelHost(model)
    with pytest.raises(StepFailure) as info:
        await steps.ensure_services(host, desired())
    assert info.value.reason == "ForeignServiceExists"
    assert "sc.exe delete kubelet" in info.value.message
    assert info.value.admin


def test_every_flag_winnode_emits_is_managed_and_emitted_once() -> None:
    # extraArgs may not name a flag of this command line (the schema refuses MANAGED_KUBELET_FLAGS),
    # so no flag can reach the kubelet twice, where the last one would silently win.
    from winnode.api.windowsnode import MANAGED_KUBELET_FLAGS, KubeletConfig

    argv = split_command_line(kc.kubelet_command_line("win-01", KubeletConfig(extra_args={"v": "2"})))
    # kube-log-runner runs the kubelet: the kubelet's own flags follow its executable.
    args = argv[argv.index(kc.KUBELET_EXE) + 1 :]
    names = [a[2:].partition("=")[0] for a in args]
    assert len(names) == len(set(names))
    assert set(names) - {"v"} <= set(MANAGED_KUBELET_FLAGS), set(names) - set(MANAGED_KUBELET_FLAGS)
    sneaked = KubeletConfig.model_construct(extra_args={"root-dir": "D:\\k"})
    with pytest.raises(ValueError, match="kubelet flags emitted twice: root-dir"):
        kc.kubelet_command_line("win-01", sneaked)


async def test_defender_exclusions_are_added_and_repaired_only_when_defender_runs() -> None:
    model = make_model()
    host = ModelHost(model)
    want = desired()
    assert want.defender is not None
    assert want.defender in steps.planned_actions(want)
    assert await steps.ensure_defender(host, want) == [
        "Defender process exclusions for " + ", ".join(kc.DEFENDER_EXCLUDED_PROCESSES)
    ]
    assert model.defender_exclusions == list(kc.DEFENDER_EXCLUDED_PROCESSES)
    assert await steps.ensure_defender(host, want) == [], "idempotent"
    # Someone removes one (Remove-MpPreference): the next drift check puts it back, and keeps the others'.
    model.defender_exclusions = ["C:\\tools\\other.exe", *kc.DEFENDER_EXCLUDED_PROCESSES[1:]]
    assert await steps.ensure_defender(host, want)
    assert set(model.defender_exclusions) == {"C:\\tools\\other.exe", *kc.DEFENDER_EXCLUDED_PROCESSES}
    # Without Defender there is nothing to exclude.
    quiet = make_model()
    quiet.defender_running = False
    assert await steps.ensure_defender(ModelHost(quiet), want) == []
    assert quiet.defender_exclusions == []


async def test_deconfigure_removes_our_defender_exclusions_and_keeps_others() -> None:
    from winnode.lifecycle.deconfigure import clean_host, host_leftovers

    model = make_model()
    host = ModelHost(model)
    assert await steps.ensure_defender(host, desired())
    model.defender_exclusions.append("C:\\tools\\other.exe")
    removed = await clean_host(host)
    assert "Microsoft Defender process exclusions" in removed
    assert model.defender_exclusions == ["C:\\tools\\other.exe"]
    assert "Microsoft Defender process exclusions" not in await clean_host(host), "idempotent"
    assert any("Defender" in item for item in host_leftovers())


# --- the drift check's one read, and which parts differ (lifecycle/observe.py) ------------------------


async def installed_and_observed() -> tuple[HostModel, ModelHost, steps.DesiredHost]:
    model = make_model()
    host = ModelHost(model)
    want = desired()
    await install(host, want)
    await steps.ensure_defender(host, want)
    want = want.without_bootstrap()
    host.calls.clear()
    return model, host, want


async def observe_drift(host: ModelHost, want: steps.DesiredHost) -> observe.Drift:
    seen = await host.run(observe.plan(want, kc.SERVICES))
    assert isinstance(seen, ObserveResult)
    return observe.drift(want, seen, kc.SERVICES)


async def test_a_healthy_host_shows_no_drift_in_one_read() -> None:
    _model, host, want = await installed_and_observed()
    drift = await observe_drift(host, want)
    assert drift.clean, drift.parts()
    assert drift == observe.Drift()
    assert host.calls == ["observe"]


async def break_file(model: HostModel) -> None:
    model.remove(kc.KUBELET_CONFIG)


async def break_binary(model: HostModel) -> None:
    await model.stop_service("kube-proxy")  # Windows keeps a running executable from being replaced
    model.write_bytes(kc.KUBE_PROXY_EXE, fake_binary("kube-proxy", "v0.0.1-tampered"))
    await model.start_service("kube-proxy")


async def break_network(model: HostModel) -> None:
    del model.hns_networks["winnode"]


async def break_firewall(model: HostModel) -> None:
    model.firewall_rules[kc.FIREWALL_VXLAN].local_port = 4790


async def break_defender(model: HostModel) -> None:
    model.defender_exclusions = model.defender_exclusions[1:]


async def break_registration(model: HostModel) -> None:
    service(model, "kube-proxy").binary_path = '"C:\\k\\kube-proxy.exe" --v=9'


async def break_running(model: HostModel) -> None:
    await model.stop_service("kube-proxy")


@pytest.mark.parametrize(
    ("breaking", "expected"),
    [
        (break_file, {"files": (kc.KUBELET_CONFIG,)}),
        # Replacing a binary in use stops its service: its state read before no longer holds.
        (break_binary, {"files": (kc.KUBE_PROXY_EXE,), "stops_services": True}),
        (break_network, {"network": True}),
        (break_firewall, {"firewall": (kc.FIREWALL_VXLAN,)}),
        (break_defender, {"defender": True}),
        (break_registration, {"services": True}),
        (break_running, {"start": ("kube-proxy",)}),
    ],
    ids=["file", "binary", "network", "firewall", "defender", "registration", "running"],
)
async def test_each_part_drifted_alone_is_the_only_part_found(
    breaking: Any, expected: dict[str, Any]
) -> None:
    model, host, want = await installed_and_observed()
    await breaking(model)
    drift = await observe_drift(host, want)
    found = {
        "files": tuple(f.path for f in drift.files),
        "stops_services": drift.stops_services,
        "network": drift.network,
        "firewall": tuple(r.name for r in drift.firewall),
        "defender": drift.defender,
        "services": drift.services,
        "start": drift.start,
    }
    clean = {"files": (), "stops_services": False, "network": False, "firewall": (), "defender": False,
             "services": False, "start": ()}  # fmt: skip
    assert found == {**clean, **expected}
    assert not drift.clean


async def test_what_the_read_does_not_cover_counts_as_drifted() -> None:
    model, host, want = await installed_and_observed()
    seen = await host.run(observe.FIRST)
    assert isinstance(seen, ObserveResult)
    assert seen.files == {}
    assert seen.hns_networks is None
    assert seen.defender is None
    drift = observe.drift(want, seen, kc.SERVICES)
    assert len(drift.files) == len(want.files)
    assert drift.network
    assert drift.defender
    assert drift.services
    assert {r.name for r in drift.firewall} == {r.name for r in want.firewall}
    assert drift.start == kc.SERVICES
    # An HNS that cannot be read: the network step reads it again and reports why.
    model.features["Containers"] = False
    seen = await host.run(observe.plan(want, kc.SERVICES))
    assert isinstance(seen, ObserveResult)
    assert seen.hns_networks is None
    assert seen.hns_error
    assert "Containers feature" in seen.hns_error
    assert observe.drift(want, seen, kc.SERVICES).network


async def test_the_read_reports_what_the_single_reads_report() -> None:
    model, host, want = await installed_and_observed()
    plan = observe.plan(want, kc.SERVICES)
    seen = await host.run(plan)
    assert isinstance(seen, ObserveResult)
    assert seen.facts == model.facts().model_copy(update={"utc_now": seen.facts.utc_now})
    assert seen.boot_id == model.boot_id
    assert seen.owner == await host.run(HostOwnerQueryParams())
    stats = await host.run(StatFilesParams(paths=plan.files))
    services = await host.run(ServiceQueryParams(names=plan.services))
    networks = await host.run(HnsNetworkQueryParams(names=plan.hns_networks))
    assert isinstance(stats, StatFilesResult)
    assert isinstance(services, ServiceQueryResult)
    assert isinstance(networks, HnsNetworkQueryResult)
    assert seen.files == stats.files
    assert seen.services == services.services
    assert seen.hns_networks == networks.networks
    assert seen.defender is not None
    assert seen.defender.running
    assert [p.casefold() for p in seen.defender.excluded] == [p.casefold() for p in plan.defender_processes]


async def test_repairs_with_the_observation_read_nothing_again() -> None:
    model, host, want = await installed_and_observed()
    await break_file(model)
    await break_running(model)
    seen = await host.run(observe.plan(want, kc.SERVICES))
    assert isinstance(seen, ObserveResult)
    drift = observe.drift(want, seen, kc.SERVICES)
    known = observe.known_services(seen, kc.SERVICES)
    assert known is not None
    assert drift.service_states_hold
    changes = await steps.ensure_files(host, want, files=drift.files, stats=seen.files, services=known)
    changes += await steps.start_services(host, list(kc.SERVICES), known=known)
    assert changes == [f"created kubelet configuration ({kc.KUBELET_CONFIG})", "started service kube-proxy"]
    assert host.calls == ["observe", "write_file", "service_start"]
    assert (await observe_drift(host, want)).clean
