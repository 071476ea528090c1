"""Would the real kubelet, kube-proxy or kube-log-runner start with this command line and config?

hack/conformance, built from k8s.io/kubernetes at the pinned version (hack/build-conformance.sh),
answers with the components' own flag sets, config decoders and validation. This module runs it, caches
every verdict by the content hash of its input (in memory and beside the binary, whose path already
names the Kubernetes version and the checker's source hash), and tells the emulated Service Control
Manager whether a service's process would exit at once.

There is no fallback: when the checker cannot be built or found, `binary()` raises
ConformanceUnavailable and the emulated service does not start.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from winnode.testing.cluster import repo_root

if TYPE_CHECKING:
    from winnode.testing.hostmodel import HostModel, ServiceRecord

BUILD_TIMEOUT_S = 1800.0
RUN_TIMEOUT_S = 300.0

# Programs the checker knows, by base name without .exe.
COMPONENTS = frozenset({"kubelet", "kube-proxy", "kube-log-runner"})


class ConformanceUnavailable(RuntimeError):
    """hack/conformance could not be built or run: no verdict, so nothing may start."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    component: str
    error: str = ""
    flag: str = ""

    def describe(self) -> str:
        """One line as the process would leave it in its log before exiting."""
        if self.ok:
            return f"{self.component}: accepted"
        where = f" (flag {self.flag})" if self.flag else ""
        return f"{self.component} refused to start{where}: {self.error}"


@dataclass(frozen=True)
class Case:
    """One process start: argv (argv[0] the program) and the files it reads, by Windows path."""

    argv: tuple[str, ...]
    files: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, argv: Sequence[str], files: Mapping[str, str] | None = None) -> Case:
        return cls(tuple(argv), tuple(sorted((files or {}).items())))

    def key(self) -> str:
        doc = json.dumps({"argv": self.argv, "files": self.files}, sort_keys=True)
        return hashlib.sha256(doc.encode()).hexdigest()


def component_of(program: str) -> str:
    base = program.replace("/", "\\").rsplit("\\", 1)[-1].lower()
    return base.removesuffix(".exe")


@cache
def binary() -> Path:
    """Build (or find, when cached) the checker; its path."""
    root = repo_root()
    if root is None:
        raise ConformanceUnavailable("hack/conformance needs a winnode checkout (hack/build-conformance.sh)")
    try:
        done = subprocess.run(
            ["bash", str(root / "hack" / "build-conformance.sh")],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConformanceUnavailable(f"hack/build-conformance.sh: {exc}") from None
    if done.returncode != 0:
        raise ConformanceUnavailable(f"hack/build-conformance.sh failed: {done.stderr.strip()[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


_memory: dict[str, Verdict] = {}
_lock = threading.Lock()


def _disk(key: str) -> Path:
    return binary().parent / "verdicts" / key[:2] / f"{key}.json"


def _load(key: str) -> Verdict | None:
    if (hit := _memory.get(key)) is not None:
        return hit
    path = _disk(key)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    verdict = Verdict(
        bool(raw["ok"]), str(raw["component"]), str(raw.get("error", "")), str(raw.get("flag", ""))
    )
    _memory[key] = verdict
    return verdict


def _store(key: str, verdict: Verdict) -> None:
    _memory[key] = verdict
    path = _disk(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(verdict.__dict__))
    tmp.replace(path)


def check_many(cases: Sequence[Case]) -> list[Verdict]:
    """The real components' verdict on each case, in order; unknown cases go to the checker in one run."""
    with _lock:
        keys = [c.key() for c in cases]
        found = {k: v for k in set(keys) if (v := _load(k)) is not None}
        todo = {k: c for k, c in zip(keys, cases, strict=True) if k not in found}
        if todo:
            doc = [{"name": k, "argv": list(c.argv), "files": dict(c.files)} for k, c in todo.items()]
            try:
                done = subprocess.run(
                    [str(binary())],
                    input=json.dumps(doc),
                    capture_output=True,
                    text=True,
                    timeout=RUN_TIMEOUT_S,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ConformanceUnavailable(f"conformance checker: {exc}") from None
            if done.returncode != 0:
                raise ConformanceUnavailable(
                    f"conformance checker failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
                )
            raw: list[dict[str, Any]] = json.loads(done.stdout)
            for item in raw:
                if item.get("crash"):
                    raise ConformanceUnavailable(f"conformance checker: {item.get('error')}")
                verdict = Verdict(
                    bool(item["ok"]),
                    str(item.get("component", "")),
                    str(item.get("error", "")),
                    str(item.get("flag", "")),
                )
                _store(str(item["name"]), verdict)
                found[str(item["name"])] = verdict
        return [found[k] for k in keys]


def check(argv: Sequence[str], files: Mapping[str, str] | None = None) -> Verdict:
    return check_many([Case.of(argv, files)])[0]


# --- what a service runs -----------------------------------------------------------------------

# kube-log-runner's flags (k8s.io/component-base/logs/kube-log-runner/kube-log-runner.go, v0.37.2,
# initFlags): the ones that take a value. Go's flag package stops at the first non-flag argument.
_LOG_RUNNER_VALUE_FLAGS = frozenset({"flush-interval", "log-file", "log-file-size", "log-file-age"})


def log_runner_split(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """kube-log-runner's own flags and the command it runs."""
    flags: dict[str, str] = {}
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name, sep, value = arg.lstrip("-").partition("=")
        if not sep and name in _LOG_RUNNER_VALUE_FLAGS and i + 1 < len(argv):
            value = argv[i + 1]
            i += 1
        flags[name] = value if (sep or name in _LOG_RUNNER_VALUE_FLAGS) else "true"
        i += 1
    return flags, list(argv[i:])


def program_argv(argv: Sequence[str]) -> list[str]:
    """The argv of the program doing the work: the command kube-log-runner wraps, else argv itself."""
    if argv and component_of(argv[0]) == "kube-log-runner":
        return log_runner_split(argv)[1]
    return list(argv)


def _flag_value(args: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        for prefix in (f"--{name}=", f"-{name}="):
            if arg.startswith(prefix):
                return arg[len(prefix) :]
        if arg in (f"--{name}", f"-{name}") and i + 1 < len(args):
            return args[i + 1]
    return None


def service_case(model: HostModel, service: ServiceRecord) -> Case | None:
    """What the checker must see for `service`, with the config file it names; None when the program
    is not one of the Kubernetes components."""
    from winnode.testing.hostmodel import split_command_line

    argv = split_command_line(service.binary_path)
    if not argv or component_of(argv[0]) not in COMPONENTS:
        return None
    files: dict[str, str] = {}
    program = program_argv(argv)
    config = _flag_value(program[1:], "config")
    if config:
        entry = model.file(config)
        if entry is not None:
            files[config] = entry.text
    return Case.of(argv, files)


def check_service(model: HostModel, service: ServiceRecord) -> Verdict | None:
    """The verdict on starting `service` on `model`; None for programs other than the components."""
    case = service_case(model, service)
    return None if case is None else check_many([case])[0]
