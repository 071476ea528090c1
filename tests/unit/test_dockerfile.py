"""The Dockerfile, checked without a Docker engine by hack/check_dockerfile.py: its rules on the real
file (fast), each rule catching a broken variant, and (slow, ~1-2 minutes: it downloads and installs
every dependency) its install steps run for real in a temporary root."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from winnode.kube import podspec

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "check_dockerfile.py"


def load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_dockerfile", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


checker = load_checker()
DOCKERFILE = (REPO / "Dockerfile").read_text()
IGNORE = checker.dockerignore_patterns(REPO / ".dockerignore")


def problems(text: str, ignore: list[str] | None = None) -> list[str]:
    result: list[str] = checker.check_rules(text, IGNORE if ignore is None else ignore, podspec.RUN_AS_UID)
    return result


def test_the_dockerfile_follows_the_rules() -> None:
    assert problems(DOCKERFILE) == []


def test_rules_only_command_passes() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--rules-only"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("Dockerfile: ok")


def test_parse_joins_continuations_and_resolves_the_base_arg() -> None:
    args, stages = checker.parse(DOCKERFILE)
    assert args["PYTHON_IMAGE"].startswith("python:3.11.")
    assert [s.name for s in stages] == ["builder", None]
    assert {s.base for s in stages} == {args["PYTHON_IMAGE"]}
    (run,) = stages[1].all("RUN")
    mounts, command = checker.run_flags(run.args)
    assert mounts["/wheels"]["from"] == "builder"
    assert 'pip" install --no-cache-dir --no-index' in command
    assert "'winnode[kerberos]'" in command
    assert checker.apt_packages(command) == ["libkrb5-3", "libgssapi-krb5-2"]
    assert "gcc" in checker.apt_packages(stages[0].all("RUN")[0].args)


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("USER 10001:10001", "USER winnode", "not numeric"),
        ("USER 10001:10001", "USER 0", "is root"),
        ("USER 10001:10001", "USER 10002", "differs from the manifests' runAsUser"),
        ("USER 10001:10001\n", "", "no USER"),
        ("--no-cache-dir --no-index", "--no-index", "without --no-cache-dir"),
        ("pip wheel --no-cache-dir", "pip wheel", "without --no-cache-dir"),
        ("--no-cache-dir --no-index", "--no-cache-dir", "only the builder's wheels"),
        ('ENTRYPOINT ["winnode"]', "ENTRYPOINT winnode", 'ENTRYPOINT ["winnode"]'),
        ("python:3.11.13-slim-bookworm", "python:3.11-slim", "not a pinned python:3.11.<patch>-slim"),
        ("python:3.11.13-slim-bookworm", "python:latest", "not a pinned"),
        ('CMD ["--help"]', 'CMD ["--help"]\nRUN true', "RUN after USER"),
        ("ENV VIRTUAL_ENV", "RUN apt-get install -y gcc\nENV VIRTUAL_ENV", "installs OS packages"),
        ("ENV VIRTUAL_ENV", "COPY operator /src\nENV VIRTUAL_ENV", "copies from the build context"),
        (
            "libkrb5-3 libgssapi-krb5-2",
            "libkrb5-3 libgssapi-krb5-2 libkrb5-dev",
            "OS packages that build code",
        ),
        ("libkrb5-3 libgssapi-krb5-2", "gcc libkrb5-3 libgssapi-krb5-2", "OS packages that build code"),
        ("libkrb5-3 libgssapi-krb5-2", "libkrb5-3 libgssapi-krb5-2 curl", "beyond krb5's runtime libraries"),
        ("'winnode[kerberos]'", "winnode", "lacks the kerberos extra"),
        ("'winnode[kerberos]'", "'winnode[kerberos,test]'", "extras in the final image other than"),
    ],
)
def test_each_rule_catches_a_broken_dockerfile(old: str, new: str, complaint: str) -> None:
    assert old in DOCKERFILE
    found = problems(DOCKERFILE.replace(old, new, 1) if old != new else DOCKERFILE)
    assert any(complaint in p for p in found), found


def test_a_single_stage_build_is_refused() -> None:
    single = "FROM python:3.11.13-slim-bookworm\nRUN pip install --no-cache-dir .\nUSER 10001\n"
    assert problems(single) == ["want a multi-stage build (builder + final), found 1 stage(s)"]


def test_dockerignore_keeps_local_state_out() -> None:
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/unit/test_x.py",
        "operator/winnode.egg-info/PKG-INFO",
        "operator/winnode/testing/kubelet.py",
        "operator/winnode/testing/__init__.py",
    ):
        assert checker.ignored(path, IGNORE), path
    for path in (
        "pyproject.toml",
        "README.md",
        "operator/winnode/cli.py",
        "operator/winnode/host/templates/x.ps1",
    ):
        assert not checker.ignored(path, IGNORE), path
    assert checker.ignored("operator/winnode/__pycache__/cli.cpython-311.pyc", IGNORE)
    assert any(".dockerignore lets .venv" in p for p in problems(DOCKERFILE, ignore=[]))
    without_testing = [p for p in IGNORE if "testing" not in p]
    assert any(
        ".dockerignore lets operator/winnode/testing" in p
        for p in problems(DOCKERFILE, ignore=without_testing)
    )


def test_absolute_paths_of_ours_move_under_the_stand_in_root(tmp_path: Path) -> None:
    box = checker.Sandbox(tmp_path / "root", tmp_path / "shim", {})
    mapped = box.map(
        'python -m venv "$VIRTUAL_ENV" && /opt/winnode/bin/pip --find-links=/wheels x >/dev/null'
    )
    assert f"{tmp_path}/root/opt/winnode/bin/pip" in mapped
    assert f"--find-links={tmp_path}/root/wheels" in mapped
    assert '"$VIRTUAL_ENV"' in mapped
    assert ">/dev/null" in mapped
    assert (
        box.map("/opt/x/bin:/usr/local/bin:/usr/bin") == f"{tmp_path}/root/opt/x/bin:{tmp_path}/shim:/usr/bin"
    )
    assert box.map("https://pypi.org/simple") == "https://pypi.org/simple"


@pytest.mark.slow
def test_install_steps_build_and_run_the_image_venv() -> None:
    result = subprocess.run(
        [str(REPO / "hack" / "check-dockerfile.sh")], capture_output=True, text=True, timeout=900, cwd=REPO
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert result.stdout.strip().endswith("Dockerfile: ok")
