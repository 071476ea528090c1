"""The service control manager: service records, the hooks and checkers beside a start, and the
service actions (ensure, start, stop, remove, query)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from winnode.host import actions as A
from winnode.testing.hostmodel.errors import ActionFailed
from winnode.testing.hostmodel.paths import split_command_line

if TYPE_CHECKING:
    from winnode.testing.conformance import Verdict
    from winnode.testing.hostmodel.model import HostModel


@dataclass
class ServiceRecord:
    name: str
    binary_path: str
    display_name: str
    description: str = ""
    dependencies: list[str] = field(default_factory=list)
    start_type: A.StartType = A.StartType.AUTOMATIC
    recovery_restart_delay_ms: int = 10_000
    recovery_reset_period_s: int = 86_400
    state: A.ServiceState = A.ServiceState.STOPPED
    started_count: int = 0

    @property
    def executable(self) -> str:
        args = split_command_line(self.binary_path)
        return args[0] if args else ""

    @property
    def arguments(self) -> list[str]:
        return split_command_line(self.binary_path)[1:]

    @property
    def program(self) -> list[str]:
        """argv of the program doing the work: the command a wrapper (kube-log-runner) runs, else
        the service's own command line."""
        from winnode.testing.conformance import program_argv

        return program_argv(split_command_line(self.binary_path))

    @property
    def images(self) -> list[str]:
        """Every executable file the running service holds open."""
        program = self.program
        return [self.executable, *program[:1]] if program[:1] != [self.executable] else [self.executable]

    def info(self) -> A.ServiceInfo:
        return A.ServiceInfo(
            exists=True,
            state=self.state,
            start_type=self.start_type,
            binary_path=self.binary_path,
            description=self.description,
            dependencies=list(self.dependencies),
        )


class ServiceHook(Protocol):
    """Runs beside a service's start and stop (the emulated kubelet hangs off the `kubelet` service)."""

    async def on_start(self, model: HostModel, service: ServiceRecord) -> None: ...

    async def on_stop(self, model: HostModel, service: ServiceRecord) -> None: ...


class ServiceChecker(Protocol):
    def __call__(self, model: HostModel, service: ServiceRecord) -> Verdict | None: ...


def _default_checker() -> ServiceChecker:
    from winnode.testing.conformance import check_service

    return check_service


# --- the service actions -----------------------------------------------------------------------


async def service_ensure(host: HostModel, p: A.ServiceEnsureParams) -> A.ServiceEnsureResult:
    wanted: dict[str, Any] = {
        "binary_path": p.binary_path,
        "display_name": p.display_name,
        "description": p.description,
        "dependencies": list(p.dependencies),
        "start_type": p.start_type,
        "recovery_restart_delay_ms": p.recovery_restart_delay_ms,
        "recovery_reset_period_s": p.recovery_reset_period_s,
    }
    service = host.service(p.name)
    if service is None:
        host.add_service(
            ServiceRecord(
                name=p.name,
                binary_path=p.binary_path,
                display_name=p.display_name,
                description=p.description,
                dependencies=list(p.dependencies),
                start_type=p.start_type,
                recovery_restart_delay_ms=p.recovery_restart_delay_ms,
                recovery_reset_period_s=p.recovery_reset_period_s,
            )
        )
        return A.ServiceEnsureResult(created=True, changed=True)
    changed = False
    for attr, value in wanted.items():
        if getattr(service, attr) != value:
            setattr(service, attr, value)
            changed = True
    return A.ServiceEnsureResult(created=False, changed=changed)


async def service_start(host: HostModel, p: A.ServiceStartParams) -> A.ServiceStateResult:
    try:
        changed = await asyncio.wait_for(host.start_service(p.name), timeout=p.timeout_s)
    except TimeoutError:
        raise ActionFailed(f"Service '{p.name}' did not reach Running within {p.timeout_s}s") from None
    return A.ServiceStateResult(state=host._require_service(p.name).state, changed=changed)


async def service_stop(host: HostModel, p: A.ServiceStopParams) -> A.ServiceStateResult:
    changed = await host.stop_service(p.name)
    return A.ServiceStateResult(state=host._require_service(p.name).state, changed=changed)


async def service_remove(host: HostModel, p: A.ServiceRemoveParams) -> A.RemovedResult:
    service = host.service(p.name)
    if service is None:
        return A.RemovedResult(removed=False)
    await host.stop_service(p.name)
    del host.services[service.name.casefold()]
    return A.RemovedResult(removed=True)


async def service_query(host: HostModel, p: A.ServiceQueryParams) -> A.ServiceQueryResult:
    infos: dict[str, A.ServiceInfo] = {}
    for name in p.names:
        service = host.service(name)
        infos[name] = service.info() if service else A.ServiceInfo(exists=False)
    return A.ServiceQueryResult(services=infos)
