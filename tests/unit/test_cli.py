"""The command table without winnode.testing (as in the production image): the test world's commands
are listed as not available and refuse to run; everything else works."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

TESTING_COMMANDS = ("demo", "dev-cluster", "emulator")


@pytest.fixture
def cli_without_testing(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    # None in sys.modules makes `import winnode.testing` raise ModuleNotFoundError, as when the
    # package is absent.
    monkeypatch.setitem(sys.modules, "winnode.testing", None)
    for name in [m for m in sys.modules if m.startswith("winnode.testing.")]:
        monkeypatch.delitem(sys.modules, name)
    import winnode.cli

    yield importlib.reload(winnode.cli)
    monkeypatch.undo()
    importlib.reload(winnode.cli)


def test_testing_commands_refuse_without_the_package(
    cli_without_testing: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in TESTING_COMMANDS:
        assert cli_without_testing.main([command]) == 2
        assert f"winnode {command}: not available in this build" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_without_testing.main(["--help"])
    assert "(not available in this build)" in " ".join(capsys.readouterr().out.split())
    args = cli_without_testing.build_parser().parse_args(["crds"])
    assert args._module == "winnode.deploy.crdgen"


def test_testing_commands_exist_in_a_development_install() -> None:
    from winnode import cli

    for command in TESTING_COMMANDS:
        args = cli.build_parser().parse_args([command] if command != "dev-cluster" else [command, "env"])
        assert args._module.startswith("winnode.testing."), args
