"""The layering of docs/architecture.md holds, and the import-linter contract that `make lint` runs
would catch a module that imports upward (planted here in a copy of the package)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path, package_parent: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(
        ROOT / "operator" / "winnode",
        tmp_path / "operator" / "winnode",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path / "operator" / "winnode"


def test_the_tree_keeps_the_layers() -> None:
    result = lint_imports(ROOT, ROOT / "operator")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_the_copy_is_what_lint_imports_reads(tmp_path: Path) -> None:
    """The copy alone (not the installed package) is analysed: it passes as the tree does."""
    copy_of_the_package(tmp_path)
    result = lint_imports(tmp_path, tmp_path / "operator")
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_upward_import_inside_a_function_breaks_the_build(tmp_path: Path) -> None:
    package = copy_of_the_package(tmp_path)
    planted = package / "kube" / "nodes.py"
    planted.write_text(
        planted.read_text()
        + "\n\ndef _planted() -> object:\n    from winnode.lifecycle import session\n\n    return session\n"
    )
    result = lint_imports(tmp_path, tmp_path / "operator")
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
    assert "winnode.kube.nodes -> winnode.lifecycle.session" in result.stdout, result.stdout


def test_a_shared_module_importing_a_layer_breaks_the_build(tmp_path: Path) -> None:
    package = copy_of_the_package(tmp_path)
    planted = package / "timeouts.py"
    planted.write_text(planted.read_text() + "\nimport winnode.handlers  # noqa: E402\n")
    result = lint_imports(tmp_path, tmp_path / "operator")
    assert result.returncode != 0, result.stdout
    assert "winnode.timeouts is not allowed to import winnode.handlers" in result.stdout, result.stdout
