#!/usr/bin/env python3
"""Check the Dockerfile without a Docker engine.

1. Rules, from the parsed Dockerfile and .dockerignore: multi-stage; a pinned python:3.11 slim base;
   the builder builds a wheel; the final stage installs only the builder's wheels (--no-index), copies
   no source, installs no OS packages (no compilers), ends as a numeric non-root USER equal to the
   UID the manifests run pods as, and has ENTRYPOINT ["winnode"]; every `pip install`/`pip wheel`
   passes --no-cache-dir; .dockerignore keeps local state (.venv, .git, tests) and the test world
   (operator/winnode/testing) out of the context.
2. Install (unless --rules-only): each stage's COPY, WORKDIR, ENV and RUN steps are executed for real,
   in order, under a temporary directory that stands in for the image's root (absolute paths of ours are
   moved under it; `python` is this machine's Python 3.11). Then, in the final stage's environment:
   `winnode --help` (the ENTRYPOINT) succeeds, the runtime packages import from the venv, the test
   extras are absent, no winnode.testing code was installed (the module cannot be found, no file of
   it is in the venv, and `winnode demo` says it is not available), and no pip cache was written.

Usage: hack/check-dockerfile.sh [--rules-only] [--keep DIR]. Exit 0 when every check passes; each
problem is printed on a line of its own.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = re.compile(r"^(docker\.io/(library/)?)?python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?$")
# Must never reach the build context.
MUST_IGNORE = (
    ".venv", ".git", "tests", "bench-results", ".mypy_cache", "operator/winnode.egg-info",
    # The test world (emulator, emulated kubelet, local control plane, demo): never in the image.
    "operator/winnode/testing",
)  # fmt: skip
# The image's `winnode` answers these with "not available in this build" (their code is in winnode.testing).
TESTING_COMMANDS = ("demo", "dev-cluster", "emulator")
# Paths the image's base owns; everything else absolute is ours and moves under the stand-in root.
SYSTEM_PREFIXES = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/dev", "/proc", "/sys", "/var")
# Our absolute paths: a "/" not preceded by a word character, a dot, "$", "}" or another "/".
ABS_PATH = re.compile(r"(?<![\w.$}/])(/[A-Za-z0-9_.\-]+)+")
RUNTIME_IMPORTS = (
    "winnode.cli",
    "winnode.process.operator",
    "winnode.admission.app",
    "kopf",
    "winrm",
    "kubernetes",
    "gssapi",
    "krb5",
    "spnego",
)
# The final stage may install these OS packages and no other: MIT krb5's runtime libraries, which the
# kerberos extra (python-gssapi, krb5) links. Never a compiler or a -dev package.
RUNTIME_OS_PACKAGES = frozenset({"libkrb5-3", "libgssapi-krb5-2"})
BUILD_TOOL = re.compile(r"-dev$|^(gcc|g\+\+|cpp|clang|make|build-essential)(-[\d.]+)?$")
# The only extra the image carries: Kerberos logon needs it (AuthMethodUnavailable without it).
IMAGE_EXTRAS = ("kerberos",)
TEST_ONLY = ("pytest", "hypothesis", "mypy", "ruff", "tree_sitter")
STEP_TIMEOUT_S = 300.0
# Settings of this machine's network that pip may need to reach its index (builder stage only).
NETWORK_ENV = (
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_CERT", "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT", "PIP_FIND_LINKS",
)  # fmt: skip
CERT_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_CERT")


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, instruction) with continuations joined and comments dropped."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if not buf:
            start = number
        if line.endswith("\\"):
            buf.append(line[:-1].strip())
            continue
        buf.append(line)
        out.append((start, " ".join(p for p in buf if p)))
        buf = []
    if buf:
        out.append((start, " ".join(buf)))
    return out


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "ARG" and not stages:
            arg, _, default = rest.partition("=")
            args[arg] = default
        elif keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            stage_name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, stage_name, number))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, rest, number))
        else:
            raise ValueError(f"Dockerfile line {number}: {keyword} before the first FROM")
    return args, stages


def expand(value: str, env: dict[str, str]) -> str:
    """$VAR and ${VAR} from the stage's ENV so far (unset: empty, as in Docker)."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)


def run_flags(args: str) -> tuple[dict[str, dict[str, str]], str]:
    """RUN's leading --flags (only --mount is used here) and its command."""
    mounts: dict[str, dict[str, str]] = {}
    while args.startswith("--"):
        flag, _, args = args.partition(" ")
        name, _, value = flag[2:].partition("=")
        if name == "mount":
            spec = dict(part.partition("=")[::2] for part in value.split(","))
            mounts[spec.get("target", "")] = spec
        args = args.lstrip()
    return mounts, args


def apt_packages(command: str) -> list[str]:
    """The packages of every `apt-get install` in a RUN command (options dropped)."""
    found: list[str] = []
    for part in re.split(r"&&|;|\|\|", command):
        words = part.split()
        if "apt-get" in words and "install" in words:
            rest = words[words.index("install") + 1 :]
            found += [w for w in rest if not w.startswith("-")]
    return found


def pip_commands(command: str) -> list[str]:
    return [
        c.strip() for c in re.split(r"&&|;|\|\|", command) if re.search(r"\bpip\b.*\b(install|wheel)\b", c)
    ]


def ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore: the last pattern matching the path or one of its parents decides."""
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/").replace("**/", "*").replace("/**", "/*")
        if any(fnmatch.fnmatchcase(c, pat) for c in candidates):
            result = not negate
    return result


def dockerignore_patterns(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


# --- rules ----------------------------------------------------------------------------------------


def check_rules(text: str, ignore: list[str], run_as_uid: int) -> list[str]:
    problems: list[str] = []
    _, stages = parse(text)
    if len(stages) < 2:
        return [f"want a multi-stage build (builder + final), found {len(stages)} stage(s)"]
    final, builders = stages[-1], stages[:-1]
    for stage in stages:
        if not BASE_IMAGE.match(stage.base):
            problems.append(
                f"line {stage.line}: base {stage.base!r} is not a pinned python:3.11.<patch>-slim image"
            )
    for stage in stages:
        for ins in stage.all("RUN"):
            for cmd in pip_commands(run_flags(ins.args)[1]):
                if "--no-cache-dir" not in cmd:
                    problems.append(f"line {ins.line}: `{cmd}` without --no-cache-dir")
            if stage is not final:
                continue
            command = run_flags(ins.args)[1]
            if re.search(r"(?:^|&&|;|\|\|)\s*(apt|apk|yum|dnf)\s", command):
                problems.append(
                    f"line {ins.line}: the final stage installs OS packages with another tool than apt-get"
                )
            packages = apt_packages(command)
            if re.search(r"\bapt-get\b", command) and not packages:
                problems.append(f"line {ins.line}: the final stage runs apt-get without a package list")
            tools = [p for p in packages if BUILD_TOOL.search(p)]
            if tools:
                problems.append(
                    f"line {ins.line}: the final stage installs OS packages that build code: {tools}"
                )
            other = [p for p in packages if p not in RUNTIME_OS_PACKAGES and p not in tools]
            if other:
                problems.append(
                    f"line {ins.line}: the final stage installs OS packages beyond krb5's runtime libraries: {other}"
                )
    if not any("pip wheel" in run_flags(i.args)[1] for s in builders for i in s.all("RUN")):
        problems.append("no builder stage builds a wheel (`pip wheel`)")
    for ins in final.all("COPY") + final.all("ADD"):
        if "--from=" not in ins.args:
            problems.append(
                f"line {ins.line}: the final stage copies from the build context, not from a builder"
            )
    installs = [c for i in final.all("RUN") for c in pip_commands(run_flags(i.args)[1]) if " install" in c]
    if not installs:
        problems.append("the final stage installs nothing with pip")
    for cmd in installs:
        if "--no-index" not in cmd:
            problems.append(f"`{cmd}`: the final stage must install only the builder's wheels (--no-index)")
        extras = {e.strip() for group in re.findall(r"\[([^\]]*)\]", cmd) for e in group.split(",")}
        if extras - set(IMAGE_EXTRAS):
            problems.append(f"`{cmd}`: extras in the final image other than {IMAGE_EXTRAS}: {sorted(extras)}")
        if not set(IMAGE_EXTRAS) <= extras:
            problems.append(f"`{cmd}`: the final image lacks the kerberos extra (Kerberos nodes need it)")
    users = final.all("USER")
    if not users:
        problems.append("the final stage has no USER: it would run as root")
    else:
        user = users[-1]
        uid, _, gid = user.args.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            problems.append(
                f"line {user.line}: USER {user.args} is not numeric (runAsNonRoot cannot check names)"
            )
        elif int(uid) == 0 or (gid and int(gid) == 0):
            problems.append(f"line {user.line}: USER {user.args} is root")
        elif int(uid) != run_as_uid:
            problems.append(
                f"line {user.line}: USER {uid} differs from the manifests' runAsUser {run_as_uid}"
            )
        if any(i.line > user.line for i in final.all("RUN")):
            problems.append(f"line {user.line}: RUN after USER runs as the unprivileged user by accident")
    entry = final.all("ENTRYPOINT")
    if not entry or json_list(entry[-1].args) != ["winnode"]:
        problems.append('the final stage needs ENTRYPOINT ["winnode"] (exec form)')
    for path in MUST_IGNORE:
        if not ignored(path, ignore):
            problems.append(f".dockerignore lets {path} into the build context")
    return problems


def json_list(text: str) -> list[str] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


# --- install --------------------------------------------------------------------------------------


class Sandbox:
    """One stage's stand-in root filesystem and environment."""

    def __init__(self, root: Path, shim: Path, env: dict[str, str]) -> None:
        self.root = root
        self.shim = shim
        self.env = env
        self.cwd = root

    def map(self, text: str) -> str:
        def one(m: re.Match[str]) -> str:
            path = m.group(0)
            if path == "/usr/local/bin" or path.startswith("/usr/local/bin/"):
                return str(self.shim) + path[len("/usr/local/bin") :]
            if path.startswith(SYSTEM_PREFIXES):
                return path
            return str(self.root) + path

        return ABS_PATH.sub(one, text)

    def path(self, value: str) -> Path:
        mapped = Path(self.map(value))
        return mapped if mapped.is_absolute() else self.cwd / mapped


def copy_context(sources: list[str], dest: Path, ignore: list[str]) -> None:
    for src in sources:
        base = (REPO / src).resolve()
        if ignored(src.rstrip("/"), ignore):
            raise RuntimeError(f"COPY {src}: excluded by .dockerignore")
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for f in files:
            rel = f.relative_to(REPO).as_posix()
            if ignored(rel, ignore):
                continue
            target = dest / f.name if base.is_file() else dest / f.relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)


def run_install(text: str, ignore: list[str], work: Path) -> list[str]:
    _, stages = parse(text)
    shim = work / "python-bin"
    shim.mkdir(parents=True)
    for name in ("python", "python3", "python3.11"):
        (shim / name).symlink_to(sys._base_executable)  # type: ignore[attr-defined]
    boxes: dict[str, Sandbox] = {}
    final: Sandbox | None = None
    for index, stage in enumerate(stages):
        last = index == len(stages) - 1
        root = work / f"stage{index}"
        root.mkdir()
        passed = NETWORK_ENV if not last else CERT_ENV
        env = {"PATH": f"{shim}:/usr/bin:/bin", "HOME": str(root / "root"), "LANG": "C.UTF-8"}
        env.update({k: os.environ[k] for k in passed if k in os.environ})
        box = Sandbox(root, shim, env)
        for ins in stage.instructions:
            if ins.keyword == "ENV":
                for pair in shlex.split(ins.args):
                    key, _, value = pair.partition("=")
                    value = expand(value, box.env)
                    box.env[key] = box.map(value)
            elif ins.keyword == "WORKDIR":
                box.cwd = box.path(ins.args)
                box.cwd.mkdir(parents=True, exist_ok=True)
            elif ins.keyword in ("COPY", "ADD"):
                words = ins.args.split()
                src_stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
                words = [w for w in words if not w.startswith("--")]
                dest = box.path(words[-1])
                if src_stage is not None:
                    other = boxes[src_stage]
                    for src in words[:-1]:
                        shutil.copytree(other.path(src), dest, dirs_exist_ok=True)
                else:
                    copy_context(words[:-1], dest, ignore)
            elif ins.keyword == "RUN":
                mounts, command = run_flags(ins.args)
                for target, spec in mounts.items():
                    if spec.get("type") == "bind" and spec.get("from") in boxes:
                        link = box.path(target)
                        link.parent.mkdir(parents=True, exist_ok=True)
                        link.symlink_to(boxes[spec["from"]].path(spec.get("source", "/")))
                # apt-get steps are not run here (they would change this machine): the packages they
                # name must be installed on it, so the steps after them see what the image would have.
                missing = [p for p in apt_packages(command) if not dpkg_installed(p)]
                if missing:
                    return [
                        f"line {ins.line}: OS packages {missing} are not installed here: apt-get install them"
                    ]
                command = (
                    " && ".join(
                        part.strip()
                        for part in command.split("&&")
                        if not re.search(r"\bapt-get\b|/var/lib/apt/lists", part)
                    )
                    or "true"
                )
                started = time.monotonic()
                result = subprocess.run(
                    ["/bin/sh", "-c", box.map(command)],
                    cwd=box.cwd,
                    env=box.env,
                    capture_output=True,
                    text=True,
                    timeout=STEP_TIMEOUT_S,
                )
                print(
                    f"  stage {index} line {ins.line}: RUN done in {time.monotonic() - started:.1f}s",
                    flush=True,
                )
                for target in mounts:
                    link = box.path(target)
                    if link.is_symlink():
                        link.unlink()
                if result.returncode != 0:
                    return [f"line {ins.line}: RUN failed ({result.returncode}):\n{result.stderr[-3000:]}"]
        boxes[stage.name or str(index)] = box
        final = box
    assert final is not None
    return verify_final(stages, boxes, final)


def dpkg_installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, timeout=30
    )
    return result.returncode == 0 and result.stdout.strip().endswith("installed")


def verify_final(stages: list[Stage], boxes: dict[str, Sandbox], box: Sandbox) -> list[str]:
    problems: list[str] = []
    # A builder that installs a compiler may build wheels from sdists (the kerberos extra's).
    compiles = any(
        BUILD_TOOL.search(p) and not p.endswith("-dev")
        for s in stages[:-1]
        for i in s.all("RUN")
        for p in apt_packages(run_flags(i.args)[1])
    )
    for builder in (b for b in boxes.values() if b is not box):
        for wheel in sorted(builder.root.rglob("*.whl")):
            # Built here from an sdist (a plain linux tag, not manylinux): the slim base has no compiler.
            if re.search(r"-linux_[a-z0-9_]+\.whl$", wheel.name) and not compiles:
                problems.append(
                    f"{wheel.name} was compiled from source: the image build would need a compiler"
                )
    (entry,) = [json_list(i.args) for i in stages[-1].all("ENTRYPOINT")][-1:] or [None]
    exe = shutil.which((entry or ["winnode"])[0], path=box.env["PATH"])
    if exe is None or not exe.startswith(str(box.root)):
        return [*problems, f"ENTRYPOINT {entry} is not installed in the image's venv (found {exe})"]
    result = subprocess.run([exe, "--help"], env=box.env, capture_output=True, text=True, timeout=60)
    if result.returncode != 0 or "run the reconciler" not in result.stdout:
        problems.append(f"`winnode --help` failed ({result.returncode}): {result.stderr[-2000:]}")
    python = shutil.which("python", path=box.env["PATH"])
    probe = (
        "import importlib, importlib.util, json, winnode\n"
        f"for m in {RUNTIME_IMPORTS!r}: importlib.import_module(m)\n"
        f"print(json.dumps({{'file': winnode.__file__, 'test_only': [m for m in {TEST_ONLY!r} "
        "if importlib.util.find_spec(m)], 'testing': importlib.util.find_spec('winnode.testing') is not None}))"
    )
    result = subprocess.run(
        [python or "python", "-c", probe], env=box.env, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        problems.append(f"runtime imports fail in the image's venv: {result.stderr[-2000:]}")
    else:
        found = json.loads(result.stdout.strip().splitlines()[-1])
        if not found["file"].startswith(str(box.root)):
            problems.append(f"winnode imports from {found['file']}, not from the image's venv")
        if found["test_only"]:
            problems.append(f"test-only packages in the final image: {found['test_only']}")
        if found["testing"]:
            problems.append("winnode.testing is importable in the final image: exclude it in .dockerignore")
    problems += testing_left(box)
    caches = [p for p in box.root.rglob("*") if p.is_dir() and p.name == "pip" and p.parent.name == ".cache"]
    if caches:
        problems.append(f"pip cache left in the final image: {caches}")
    return problems


def testing_left(box: Sandbox) -> list[str]:
    """winnode.testing in the final stage: any file of it, or a test-world command that runs."""
    problems = [
        f"test-world code in the final image: {p.relative_to(box.root)}"
        for p in sorted(box.root.rglob("*"))
        if p.is_dir() and p.name == "testing" and p.parent.name == "winnode"
    ]
    exe = shutil.which("winnode", path=box.env["PATH"])
    for command in TESTING_COMMANDS:
        # --help: were the command there, it would only print its options, never start a demo.
        result = subprocess.run(
            [exe or "winnode", command, "--help"], env=box.env, capture_output=True, text=True, timeout=60
        )
        if "not available in this build" not in " ".join(result.stdout.split()):
            problems.append(f"`winnode {command}` is available in the final image: {result.stdout[-500:]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules-only", action="store_true", help="only parse and check the rules")
    parser.add_argument("--dockerfile", type=Path, default=REPO / "Dockerfile")
    parser.add_argument("--keep", type=Path, help="do the install in DIR and keep it")
    parser.add_argument(
        "--run-as-uid", type=int, default=None, help="UID the pods run as (default: the manifests')"
    )
    args = parser.parse_args(argv)
    text = args.dockerfile.read_text()
    ignore = dockerignore_patterns(args.dockerfile.parent / ".dockerignore")
    uid = args.run_as_uid
    if uid is None:
        sys.path.insert(0, str(REPO / "operator"))
        from winnode.kube.podspec import RUN_AS_UID

        uid = RUN_AS_UID
    problems = check_rules(text, ignore, uid)
    if not problems and not args.rules_only:
        started = time.monotonic()
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            problems = run_install(text, ignore, Path(tempfile.mkdtemp(dir=args.keep)))
        else:
            with tempfile.TemporaryDirectory(prefix="winnode-image-") as tmp:
                problems = run_install(text, ignore, Path(tmp))
        print(f"install steps checked in {time.monotonic() - started:.1f}s")
    for problem in problems:
        print(f"Dockerfile: {problem}")
    if not problems:
        print("Dockerfile: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
