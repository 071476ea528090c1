"""The emulated host model: each action's behaviour, idempotency, faults, NTFS-like paths."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from winnode.host import actions as A
from winnode.network.hns import HnsHost, network_params
from winnode.testing.artifacts import ArtifactServer, fake_binary
from winnode.testing.conformance import ConformanceUnavailable
from winnode.testing.containerd import MICROSOFT
from winnode.testing.hostmodel import (
    NOT_ENOUGH_SPACE,
    ActionFailed,
    Faults,
    FetchError,
    HostModel,
    ServiceRecord,
    new_host_model,
    normalize_path,
    split_command_line,
    urllib_fetch,
)

KUBELET = "C:\\k\\kubelet.exe"


def host(**kwargs: Any) -> HostModel:
    return new_host_model("win-01", **kwargs)


async def run(model: HostModel, action: str, **params: Any) -> Any:
    return await model.execute(A.params_for(action, params))


class StubFetcher:
    def __init__(self, content: bytes) -> None:
        self.content = content
        self.calls: list[str] = []

    async def __call__(self, url: str, limit_s: float) -> bytes:
        self.calls.append(url)
        return self.content


class RecordingHook:
    def __init__(self, fail_start: str | None = None) -> None:
        self.events: list[str] = []
        self.fail_start = fail_start

    async def on_start(self, model: HostModel, service: ServiceRecord) -> None:
        self.events.append(f"start:{service.name}")
        if self.fail_start:
            raise RuntimeError(self.fail_start)

    async def on_stop(self, model: HostModel, service: ServiceRecord) -> None:
        self.events.append(f"stop:{service.name}")


def state(model: HostModel, name: str) -> A.ServiceState:
    service = model.service(name)
    assert service is not None, f"service {name} does not exist"
    return service.state


def kubelet_service(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "name": "kubelet",
        "binary_path": f'"{KUBELET}" --windows-service --bootstrap-kubeconfig=C:\\k\\bootstrap.conf',
        "display_name": "kubelet",
        "description": "Kubernetes node agent (managed by winnode)",
        "dependencies": ["containerd"],
    }
    params.update(overrides)
    return params


# --- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("C:\\k", "C:\\k"),
        ("c:/k/bin/", "C:\\k\\bin"),
        ("C:\\k\\.\\bin\\..\\etc", "C:\\k\\etc"),
        ("C:\\\\k\\\\x", "C:\\k\\x"),
        ("c:\\", "C:\\"),
    ],
)
def test_normalize_path(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize("bad", ["k\\kubelet.exe", "\\\\server\\share\\x", "C:\\k\\a|b", "C:\\k\\trailing. "])
def test_normalize_path_rejects(bad: str) -> None:
    with pytest.raises(ActionFailed):
        normalize_path(bad)


async def test_paths_are_case_insensitive_and_keep_first_spelling() -> None:
    model = host()
    result = await run(model, "write_file", path="C:\\K\\Config\\Kubelet.YAML", content="a: 1\n")
    assert result.changed
    entry = model.file("c:/k/config/kubelet.yaml")
    assert entry is not None
    assert entry.text == "a: 1\n"
    assert entry.path == "C:\\K\\Config\\Kubelet.YAML"
    again = await run(model, "write_file", path="c:\\k\\config\\KUBELET.yaml", content="a: 1\n")
    assert not again.changed
    assert model.is_dir("C:\\k")
    assert model.is_dir("c:\\K\\CONFIG")
    stats = await run(model, "stat_files", paths=["C:\\k\\CONFIG\\kubelet.yaml", "C:\\k\\nope"])
    assert stats.files["C:\\k\\CONFIG\\kubelet.yaml"].exists
    assert stats.files["C:\\k\\CONFIG\\kubelet.yaml"].sha256 == hashlib.sha256(b"a: 1\n").hexdigest()
    assert stats.files["C:\\k\\nope"] == A.FileStat(exists=False)


def test_split_command_line_follows_windows_rules() -> None:
    assert split_command_line('"C:\\Program Files\\x.exe" --a=b "c d" e\\\\"f g"') == [
        "C:\\Program Files\\x.exe",
        "--a=b",
        "c d",
        "e\\f g",
    ]
    assert split_command_line('C:\\k\\kubelet.exe --x="a \\"b\\"" ""') == [
        "C:\\k\\kubelet.exe",
        '--x=a "b"',
        "",
    ]
    assert split_command_line("   ") == []


# --- directories and files -----------------------------------------------------------------------


async def test_ensure_directories_is_idempotent() -> None:
    model = host()
    first = await run(model, "ensure_directories", paths=["C:\\k", "C:\\k\\cni\\config", "C:\\var\\log"])
    assert first.created == ["C:\\k", "C:\\k\\cni\\config", "C:\\var\\log"]
    second = await run(model, "ensure_directories", paths=["c:\\K", "C:\\k\\cni\\config"])
    assert second.created == []


async def test_ensure_directories_over_a_file_fails() -> None:
    model = host()
    await run(model, "write_file", path="C:\\k", content="x")
    with pytest.raises(ActionFailed, match="already exists"):
        await run(model, "ensure_directories", paths=["C:\\k\\sub"])


async def test_write_file_reports_hash_size_and_secret() -> None:
    model = host()
    result = await run(model, "write_file", path="C:\\k\\token", content="héllo", secret=True)
    assert result.changed
    assert result.size == len("héllo".encode())
    assert result.sha256 == hashlib.sha256("héllo".encode()).hexdigest()
    entry = model.file("C:\\k\\token")
    assert entry is not None
    assert entry.secret
    # A changed ACL alone is a change too.
    assert (await run(model, "write_file", path="C:\\k\\token", content="héllo", secret=False)).changed


async def test_disk_accounting_and_full_disk() -> None:
    model = host(free_disk_bytes=1000)
    await run(model, "write_file", path="C:\\k\\a", content="x" * 600)
    assert model.free_disk_bytes == 400
    with pytest.raises(ActionFailed, match=NOT_ENOUGH_SPACE):
        await run(model, "write_file", path="C:\\k\\b", content="y" * 500)
    assert model.file("C:\\k\\b") is None
    await run(model, "remove_path", path="C:\\k\\a")
    assert model.free_disk_bytes == 1000
    model.faults.disk_full = True
    with pytest.raises(ActionFailed, match=r"There is not enough space on the disk\. : 'C:\\k\\c'"):
        await run(model, "write_file", path="C:\\k\\c", content="z")


async def test_remove_path_rules() -> None:
    model = host()
    await run(model, "write_file", path="C:\\k\\etc\\a.conf", content="a")
    assert not (await run(model, "remove_path", path="C:\\nothing")).removed
    with pytest.raises(ActionFailed, match="has children and the Recurse parameter was not specified"):
        await run(model, "remove_path", path="C:\\k")
    assert (await run(model, "remove_path", path="C:\\K", recurse=True)).removed
    assert not model.exists("C:\\k\\etc\\a.conf")
    assert not model.exists("C:\\k\\etc")
    assert (await run(model, "ensure_directories", paths=["C:\\k"])).created == ["C:\\k"]
    assert (await run(model, "remove_path", path="C:\\k")).removed


# --- fetch ---------------------------------------------------------------------------------------


async def test_fetch_file_downloads_verifies_and_skips_when_hash_matches() -> None:
    content = fake_binary("kubelet", "v1.37.2")
    digest = hashlib.sha256(content).hexdigest()
    fetcher = StubFetcher(content)
    model = host(fetcher=fetcher)
    first = await run(model, "fetch_file", url="http://mirror/kubelet.exe", path=KUBELET, sha256=digest)
    assert first == A.FileWriteResult(changed=True, sha256=digest, size=len(content))
    second = await run(model, "fetch_file", url="http://mirror/kubelet.exe", path=KUBELET, sha256=digest)
    assert not second.changed
    assert fetcher.calls == ["http://mirror/kubelet.exe"]  # the second run did not download
    # Without a pinned hash the file is downloaded again but unchanged content is no change.
    third = await run(model, "fetch_file", url="http://mirror/kubelet.exe", path=KUBELET)
    assert not third.changed
    assert len(fetcher.calls) == 2


async def test_fetch_file_hash_mismatch_names_both_hashes() -> None:
    content = b"not what you pinned"
    model = host(fetcher=StubFetcher(content))
    expected = "0" * 64
    with pytest.raises(ActionFailed) as info:
        await run(model, "fetch_file", url="http://mirror/kubelet.exe", path=KUBELET, sha256=expected)
    assert expected in str(info.value)
    assert hashlib.sha256(content).hexdigest() in str(info.value)
    assert model.file(KUBELET) is None


async def test_checksum_mismatch_fault_corrupts_downloads() -> None:
    content = fake_binary("kube-proxy", "v1.37.2")
    digest = hashlib.sha256(content).hexdigest()
    model = host(fetcher=StubFetcher(content))
    model.faults.checksum_mismatch = True
    with pytest.raises(ActionFailed, match=f"expected sha256 {digest}, actual "):
        await run(
            model, "fetch_file", url="http://m/kube-proxy.exe", path="C:\\k\\kube-proxy.exe", sha256=digest
        )
    model.faults.checksum_mismatch = False
    assert (
        await run(model, "fetch_file", url="http://m/x", path="C:\\k\\kube-proxy.exe", sha256=digest)
    ).changed


async def test_fetch_file_over_real_http() -> None:
    content = fake_binary("kubelet", "v1.36.1")
    with ArtifactServer({"/v1.36.1/kubelet.exe": content}) as server:
        model = host()
        result = await run(model, "fetch_file", url=server.url_for("/v1.36.1/kubelet.exe"), path=KUBELET)
        assert result.changed
        assert result.size == len(content)
        with pytest.raises(ActionFailed, match=r"\(404\) Not Found"):
            await run(model, "fetch_file", url=server.url_for("/missing.exe"), path="C:\\k\\missing.exe")
        assert server.downloads("/v1.36.1/kubelet.exe") == 1


async def test_fetcher_reports_unreachable_and_bad_scheme() -> None:
    with pytest.raises(FetchError, match="URI prefix is not recognized"):
        await urllib_fetch("file:///etc/passwd", 1.0)
    with ArtifactServer() as server:
        url = server.url
    with pytest.raises(FetchError, match="Unable to connect to the remote server"):
        await urllib_fetch(url + "/gone", 2.0)


# --- services ------------------------------------------------------------------------------------


async def test_service_ensure_is_idempotent_and_detects_changes() -> None:
    model = host()
    assert await run(model, "service_ensure", **kubelet_service()) == A.ServiceEnsureResult(
        created=True, changed=True
    )
    assert await run(model, "service_ensure", **kubelet_service()) == A.ServiceEnsureResult(
        created=False, changed=False
    )
    changed = await run(model, "service_ensure", **kubelet_service(start_type="Manual"))
    assert changed == A.ServiceEnsureResult(created=False, changed=True)
    info = (await run(model, "service_query", names=["kubelet", "nope"])).services
    assert info["kubelet"].exists
    assert info["kubelet"].start_type == A.StartType.MANUAL
    assert info["kubelet"].dependencies == ["containerd"]
    assert info["nope"] == A.ServiceInfo(exists=False)


async def test_service_start_needs_its_binary_and_dependencies() -> None:
    model = host()
    await run(model, "service_ensure", **kubelet_service(dependencies=["containerd", "ghost"]))
    with pytest.raises(ActionFailed, match="dependency service does not exist"):
        await run(model, "service_start", name="kubelet")
    await run(model, "service_ensure", **kubelet_service())
    with pytest.raises(ActionFailed, match="cannot find the file specified") as info:
        await run(model, "service_start", name="kubelet")
    assert "Cannot start service kubelet" in str(info.value)
    assert state(model, "kubelet") == A.ServiceState.STOPPED
    model.write_bytes(KUBELET, fake_binary("kubelet", "v1.37.2"))
    await model.stop_service("containerd")
    started = await run(model, "service_start", name="KUBELET")
    assert started == A.ServiceStateResult(state=A.ServiceState.RUNNING, changed=True)
    assert state(model, "containerd") == A.ServiceState.RUNNING
    assert not (await run(model, "service_start", name="kubelet")).changed


async def test_disabled_service_does_not_start() -> None:
    model = host()
    model.write_bytes(KUBELET, fake_binary("kubelet", "v1.37.2"))
    await run(model, "service_ensure", **kubelet_service(start_type="Disabled"))
    with pytest.raises(ActionFailed, match="disabled"):
        await run(model, "service_start", name="kubelet")


async def test_stop_takes_dependents_down_and_running_binary_is_locked() -> None:
    model = host()
    model.write_bytes(KUBELET, fake_binary("kubelet", "v1.37.2"))
    await run(model, "service_ensure", **kubelet_service())
    await run(model, "service_start", name="kubelet")
    with pytest.raises(ActionFailed, match="being used by another process"):
        await run(model, "write_file", path=KUBELET.lower(), content="new")
    with pytest.raises(ActionFailed, match="being used by another process"):
        await run(model, "remove_path", path="C:\\k", recurse=True)
    stopped = await run(model, "service_stop", name="containerd")
    assert stopped == A.ServiceStateResult(state=A.ServiceState.STOPPED, changed=True)
    assert state(model, "kubelet") == A.ServiceState.STOPPED
    assert (await run(model, "write_file", path=KUBELET, content="new")).changed
    assert not (await run(model, "service_stop", name="kubelet")).changed


async def test_service_remove_stops_first() -> None:
    model = host()
    hook = RecordingHook()
    model.service_hooks["kubelet"] = hook
    model.write_bytes(KUBELET, fake_binary("kubelet", "v1.37.2"))
    await run(model, "service_ensure", **kubelet_service())
    await run(model, "service_start", name="kubelet")
    assert (await run(model, "service_remove", name="kubelet")).removed
    assert not (await run(model, "service_remove", name="kubelet")).removed
    assert hook.events == ["start:kubelet", "stop:kubelet"]
    with pytest.raises(ActionFailed, match="Cannot find any service with service name 'kubelet'"):
        await run(model, "service_start", name="kubelet")


async def test_service_hook_failure_fails_the_start() -> None:
    model = host()
    model.service_hooks["kubelet"] = RecordingHook(fail_start="bootstrap kubeconfig is invalid")
    model.write_bytes(KUBELET, fake_binary("kubelet", "v1.37.2"))
    await run(model, "service_ensure", **kubelet_service())
    with pytest.raises(ActionFailed, match="bootstrap kubeconfig is invalid"):
        await run(model, "service_start", name="kubelet")
    assert state(model, "kubelet") == A.ServiceState.STOPPED


# --- networking ----------------------------------------------------------------------------------


def l2bridge(**overrides: Any) -> dict[str, Any]:
    """hns_network_ensure's parameters, with the request rendered for the emulator's default HNS (13.2)."""
    fields: dict[str, Any] = {
        "name": "cbr0",
        "type_": A.HnsNetworkType.L2BRIDGE,
        "prefix": "10.244.3.0/24",
        "gateway": "10.244.3.1",
        "adapter": "Ethernet",
    }
    renamed = {"type": "type_", "address_prefix": "prefix", "adapter_name": "adapter"}
    fields.update({renamed.get(k, k): v for k, v in overrides.items()})
    fields["type_"] = A.HnsNetworkType(fields["type_"])
    return network_params(HnsHost(version=(13, 2)), **fields).model_dump(mode="json")


async def test_hns_network_lifecycle() -> None:
    model = host()
    created = await run(model, "hns_network_ensure", **l2bridge())
    assert created.created
    assert created.changed
    same = await run(model, "hns_network_ensure", **l2bridge())
    assert same == A.HnsNetworkEnsureResult(id=created.id, created=False, changed=False)
    moved = await run(
        model, "hns_network_ensure", **l2bridge(address_prefix="10.244.4.0/24", gateway="10.244.4.1")
    )
    assert moved.changed
    assert not moved.created
    assert moved.id != created.id
    query = await run(model, "hns_network_query", names=["cbr0", "other"])
    assert query.networks["cbr0"].address_prefix == "10.244.4.0/24"
    assert not query.networks["other"].exists
    assert (await run(model, "hns_network_remove", name="cbr0")).removed
    assert not (await run(model, "hns_network_remove", name="cbr0")).removed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"adapter_name": "Ethernet 7"}, "no network adapter is named 'Ethernet 7'"),
        ({"gateway": "10.0.0.1"}, "outside 10.244.3.0/24"),
        ({"type": "Overlay", "vsid": None}, "needs a VSID"),
        ({"address_prefix": "10.244.3.7/24"}, "host bits set"),
    ],
)
async def test_hns_network_validation(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ActionFailed, match=message):
        await run(host(), "hns_network_ensure", **l2bridge(**overrides))


async def test_hns_needs_the_containers_feature() -> None:
    model = host(features={"Containers": False})
    with pytest.raises(ActionFailed, match="Containers feature is not installed"):
        await run(model, "hns_network_query", names=["cbr0"])


async def test_firewall_rules() -> None:
    model = host()
    rule = {"name": "winnode-kubelet", "display_name": "kubelet API", "protocol": "TCP", "local_port": 10250}
    assert (await run(model, "firewall_rule_ensure", **rule)).changed
    assert not (await run(model, "firewall_rule_ensure", **rule)).changed
    assert (await run(model, "firewall_rule_ensure", **{**rule, "local_port": 10255})).changed
    assert (await run(model, "firewall_rule_remove", name="winnode-kubelet")).removed
    assert not (await run(model, "firewall_rule_remove", name="winnode-kubelet")).removed


# --- facts and power -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "caption"),
    [
        (17763, "Microsoft Windows Server 2019 Datacenter"),
        (20348, "Microsoft Windows Server 2022 Datacenter"),
        (26100, "Microsoft Windows Server 2025 Datacenter"),
    ],
)
async def test_facts(build: int, caption: str) -> None:
    model = host(os_build=build, addresses=["10.1.2.3"], free_disk_bytes=5 << 30)
    facts = await run(model, "facts")
    assert facts.os_build == build
    assert facts.os_caption == caption
    assert facts.os_ubr > 0
    assert facts.hostname == "win-01"
    assert facts.addresses == ["10.1.2.3"]
    assert facts.features == {"Containers": True}
    assert facts.containerd == A.ContainerdFacts(
        installed=True, running=True, version="2.1.4", config_dump=MICROSOFT.dump()
    )
    assert facts.system_drive_free_bytes == 5 << 30
    assert facts.powershell_version.startswith(f"5.1.{build}.")
    assert facts.utc_now.endswith("Z")
    assert not facts.reboot_pending


async def test_facts_without_containerd() -> None:
    facts = await run(host(containerd_installed=False, features={"Containers": False}), "facts")
    assert facts.containerd == A.ContainerdFacts(installed=False, running=False, version=None)
    assert facts.features == {"Containers": False}


async def test_reboot_action_and_boot() -> None:
    model = host()
    requested: list[float] = []
    model.on_reboot_requested = requested.append
    hook = RecordingHook()
    model.service_hooks["kubelet"] = hook
    model.write_bytes(KUBELET, fake_binary("kubelet", "v1.37.2"))
    await run(model, "service_ensure", **kubelet_service())
    await run(model, "service_start", name="kubelet")
    await run(
        model, "service_ensure", **kubelet_service(name="kube-proxy", start_type="Manual", dependencies=[])
    )
    await run(model, "service_start", name="kube-proxy")
    before = model.boot_id
    result = await run(model, "reboot", reason="install Containers", delay_s=3)
    assert result.boot_id == before
    assert requested == [3.0]
    assert model.reboot_pending
    await model.reboot()
    assert model.boot_id != before
    assert not model.reboot_pending
    assert state(model, "kubelet") == A.ServiceState.RUNNING
    assert state(model, "containerd") == A.ServiceState.RUNNING
    assert state(model, "kube-proxy") == A.ServiceState.STOPPED
    assert hook.events == ["start:kubelet", "stop:kubelet", "start:kubelet"]
    assert (await run(model, "facts")).boot_id == model.boot_id


# --- faults --------------------------------------------------------------------------------------


def test_faults_exit_code_counting_and_notifications() -> None:
    faults = Faults()
    seen: list[str] = []
    faults.subscribe(seen.append)
    assert faults.take_exit_code() is None
    faults.fail_next(2, exit_code=5)
    assert [faults.take_exit_code(), faults.take_exit_code(), faults.take_exit_code()] == [5, 5, None]
    faults.exit_code = 7  # without a count: every command until cleared
    assert [faults.take_exit_code(), faults.take_exit_code()] == [7, 7]
    faults.stall = True
    faults.clear()
    assert faults == Faults()
    assert "stall" in seen
    assert "exit_code" in seen
    with pytest.raises(ValueError, match="at least 1"):
        faults.fail_next(0)


# --- the real components decide whether a service process starts ---------------------------------

RUNNER = "C:\\k\\kube-log-runner.exe"


async def test_a_service_the_kubelet_refuses_stays_stopped_and_logs_why() -> None:
    model = host()
    model.write_bytes(KUBELET, fake_binary("kubelet", "v1.37.2"))
    model.write_bytes(RUNNER, fake_binary("kube-log-runner", "v1.37.2"))
    old = f"{RUNNER} -log-file=C:\\k\\logs\\kubelet.log {KUBELET} --windows-service --log-file=C:\\k\\logs\\k.log"
    await run(model, "service_ensure", **kubelet_service(binary_path=old))
    with pytest.raises(ActionFailed, match="unknown flag: --log-file") as info:
        await run(model, "service_start", name="kubelet")
    assert "Cannot start service kubelet" in str(info.value)
    assert "(flag --log-file)" in str(info.value)
    assert state(model, "kubelet") == A.ServiceState.STOPPED
    logged = model.file("C:\\k\\logs\\kubelet.log")
    assert logged is not None
    assert "kubelet refused to start (flag --log-file)" in logged.text

    fixed = f"{RUNNER} -log-file=C:\\k\\logs\\kubelet.log {KUBELET} --windows-service"
    await run(model, "service_ensure", **kubelet_service(binary_path=fixed))
    assert (await run(model, "service_start", name="kubelet")).changed
    # Both images are held open while the service runs: the wrapper and the kubelet it runs.
    for image in (RUNNER, KUBELET):
        with pytest.raises(ActionFailed, match="being used by another process"):
            await run(model, "write_file", path=image, content="new")


async def test_without_a_checker_verdict_nothing_starts() -> None:
    def unavailable(model: HostModel, service: ServiceRecord) -> None:
        raise ConformanceUnavailable("hack/build-conformance.sh failed: go is not installed")

    model = host()
    model.service_checker = unavailable
    model.write_bytes(KUBELET, fake_binary("kubelet", "v1.37.2"))
    await run(model, "service_ensure", **kubelet_service())
    with pytest.raises(ConformanceUnavailable):
        await run(model, "service_start", name="kubelet")
    assert state(model, "kubelet") == A.ServiceState.STOPPED
