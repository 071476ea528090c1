"""Service control manager records, and the hooks and checkers beside a service's start."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from winnode.host import actions as A
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
