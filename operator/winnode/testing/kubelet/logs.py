"""The kubelet's node log query (`/logs/`), as kubelet v1.37.2 answers it on Windows.

Restated from pkg/kubelet/kubelet.go (Run: the /logs/ handler), pkg/kubelet/kubelet_server_journal.go
(newNodeLogQuery, validate, heuristicsCopyFileLogs) and pkg/kubelet/kubelet_server_journal_windows.go
(checkForNativeLogger, getLoggingCmdArgs), at the version pinned in hack/versions.env.

What `query=kubelet` means on Windows: kubelet first asks `Get-WinEvent -ListProvider kubelet`. Only a
service that registered an event log provider is read from the Application log; any other name is
looked up as a file under nodeLogDir, "/var/log/" (C:\\var\\log on the system drive), trying `NAME`,
`NAME.log` and `NAME\\NAME.log`. A kubelet run by kube-log-runner writes to a file and registers no
provider, so its log is served only when that file lies under C:\\var\\log.

The host is given as two callables so that this module stays pure: `read_file(path)` returns a file's
bytes (None when absent) and `providers` maps an event provider name to its events.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

# pkg/kubelet/kubelet_server_journal.go constants.
MAX_TAIL_LINES = 100000
MAX_SERVICE_LENGTH = 256
MAX_SERVICES = 4
# nodeLogDir "/var/log/", which Go resolves on the drive kubelet runs from.
NODE_LOG_DIR = "C:\\var\\log"
_UNSAFE_SERVICE_CHARACTERS = re.compile(r"[^a-zA-Z\-_.:0-9@]+")

ReadFile = Callable[[str], bytes | None]


@dataclass(frozen=True)
class Event:
    """One Application log event of a provider (what Get-WinEvent returns)."""

    time: datetime.datetime
    message: str


@dataclass(frozen=True)
class Answer:
    """The kubelet's HTTP answer: status, body and content type."""

    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


@dataclass
class NodeLogQuery:
    services: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    since: datetime.datetime | None = None
    until: datetime.datetime | None = None
    tail_lines: int | None = None
    boot: int | None = None
    pattern: str = ""

    def has_options(self) -> bool:
        return (self.since, self.until, self.tail_lines, self.boot) != (None, None, None, None) or bool(
            self.pattern
        )


def _invalid(path: str, value: object, detail: str) -> str:
    # k8s.io/apimachinery/pkg/util/validation/field: Invalid(...).Error()
    shown = f'"{value}"' if isinstance(value, str) else str(value)
    return f"{path}: Invalid value: {shown}: {detail}"


def _aggregate(errors: Sequence[str]) -> str:
    # utilerrors.NewAggregate(...).Error(): one message alone, several in brackets.
    return errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"


def _rfc3339(value: str) -> datetime.datetime | None:
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    # time.Parse(time.RFC3339, ...) needs a date, a time and a zone.
    return parsed if parsed.tzinfo is not None and "T" in value.upper() else None


def _atoi(value: str) -> int | None:
    return int(value) if re.fullmatch(r"[+-]?[0-9]+", value) else None


def parse(query: Mapping[str, Sequence[str]]) -> tuple[NodeLogQuery | None, list[str]]:
    """newNodeLogQuery: the query, None when no query parameter is given at all, and the parse errors."""
    errors: list[str] = []
    nlq = NodeLogQuery()
    queries = list(query.get("query", []))
    for q in queries:
        if "/" in q or "\\" in q:
            nlq.files.append(q)
        elif q.strip():
            nlq.services.append(q)
    if "query" in query and not nlq.files and not nlq.services:
        errors.append(_invalid("query", queries, "may not be empty"))

    def first(name: str) -> str:
        values = query.get(name) or [""]
        return values[0]

    for name in ("sinceTime", "untilTime"):
        if value := first(name):
            when = _rfc3339(value)
            if when is None:
                errors.append(_invalid(name, value, "invalid time format"))
            elif name == "sinceTime":
                nlq.since = when
            else:
                nlq.until = when
    for name in ("boot", "tailLines"):
        if value := first(name):
            number = _atoi(value)
            if number is None:
                errors.append(_invalid(name, value, f'strconv.Atoi: parsing "{value}": invalid syntax'))
            elif name == "boot":
                nlq.boot = number
            else:
                nlq.tail_lines = number
    nlq.pattern = first("pattern")
    if errors:
        return None, errors
    if nlq == NodeLogQuery():
        return None, []
    return nlq, []


def validate(nlq: NodeLogQuery, read_file: ReadFile) -> list[str]:
    """nodeLogQuery.validate, with the Windows rules (runtime.GOOS == "windows")."""
    errors: list[str] = []
    for service in nlq.services:
        if len(service) > MAX_SERVICE_LENGTH:
            errors.append(_invalid("query", service, f"length must be less than {MAX_SERVICE_LENGTH}"))
        elif _UNSAFE_SERVICE_CHARACTERS.search(service):
            errors.append(_invalid("query", service, "input contains unsupported characters"))
    if len(nlq.services) > MAX_SERVICES:
        errors.append(f"query: Too many: {len(nlq.services)}: must have at most {MAX_SERVICES} items")
    if not nlq.files and not nlq.services:
        errors.append("query: Required value: cannot be empty with options")
    elif nlq.files and nlq.services:
        errors.append(_invalid("query", f"{nlq.files}, {nlq.services}", "cannot specify a file and service"))
    elif len(nlq.files) > 1:
        errors.append(_invalid("query", nlq.files, "cannot specify more than one file"))
    elif len(nlq.files) == 1 and nlq.has_options():
        errors.append(_invalid("query", nlq.files, "cannot specify file with options"))
    elif len(nlq.files) == 1 and _in_log_dir(nlq.files[0], read_file) is None:
        # os.OpenRoot(nodeLogDir).Stat(file): absent, or escaping the root.
        errors.append(_invalid("query", nlq.files, "no such file or directory"))
    if nlq.since is not None and nlq.until is not None and nlq.since > nlq.until:
        errors.append(_invalid("untilTime", nlq.until.isoformat(), "must be after `sinceTime`"))
    if nlq.boot is not None:
        errors.append(_invalid("boot", nlq.boot, "not supported on Windows"))
        if nlq.boot > 0:
            errors.append(_invalid("boot", nlq.boot, "must be less than 1"))
    if nlq.tail_lines is not None and not 0 <= nlq.tail_lines <= MAX_TAIL_LINES:
        errors.append(
            _invalid("tailLines", nlq.tail_lines, f"must be between 0 and {MAX_TAIL_LINES}, inclusive")
        )
    try:
        # Go's regexp/syntax (RE2, Perl flags); Python's re refuses the same malformed patterns.
        re.compile(nlq.pattern)
    except re.error as exc:
        errors.append(_invalid("pattern", nlq.pattern, f"error parsing regexp: {exc}"))
    return errors


def _in_log_dir(relative: str, read_file: ReadFile) -> bytes | None:
    """os.OpenInRoot(nodeLogDir, name): a file below the log directory, never one outside it."""
    parts = [p for p in re.split(r"[\\/]+", relative) if p not in ("", ".")]
    if not parts or ".." in parts or re.match(r"^[A-Za-z]:", relative):
        return None
    return read_file(NODE_LOG_DIR + "\\" + "\\".join(parts))


def _service_events(nlq: NodeLogQuery, events: Sequence[Event]) -> str:
    # getLoggingCmdArgs: StartTime/EndTime filter, -MaxEvents (the newest N), sorted by time, then
    # Where-Object Message -Match pattern (applied after -MaxEvents, as the pipeline does).
    chosen = [
        e
        for e in events
        if (nlq.since is None or e.time >= nlq.since) and (nlq.until is None or e.time <= nlq.until)
    ]
    chosen.sort(key=lambda e: e.time, reverse=True)
    if nlq.tail_lines is not None:
        chosen = chosen[: nlq.tail_lines]
    chosen.sort(key=lambda e: e.time)
    if nlq.pattern:
        rx = re.compile(nlq.pattern, re.IGNORECASE)  # PowerShell's -Match ignores case
        chosen = [e for e in chosen if rx.search(e.message)]
    return "".join(f"{e.time.isoformat()} {e.message}\n" for e in chosen)


def _copy_file_logs(service: str, read_file: ReadFile) -> str:
    # heuristicsCopyFileLogs: NAME, NAME.log, NAME/NAME.log under nodeLogDir.
    for name in (service, f"{service}.log", f"{service}/{service}.log"):
        content = _in_log_dir(name, read_file)
        if content is not None:
            return content.decode("utf-8", errors="replace")
    return f"\nlog not found for {service}\n"


def answer(
    method: str,
    path: str,
    query: Mapping[str, Sequence[str]],
    *,
    read_file: ReadFile,
    providers: Mapping[str, Sequence[Event]] | None = None,
) -> Answer:
    """The answer of the kubelet's /logs/ handler; `path` is what follows /logs/."""
    nlq, errors = parse(query)
    if errors:
        return Answer(400, _aggregate(errors) + "\n")
    if nlq is None:
        return _serve_file(path, read_file)
    if path not in ("", "/"):
        return Answer(406, "path not allowed in query mode\n")
    problems = validate(nlq, read_file)
    if problems:
        return Answer(406, _aggregate(problems) + "\n")
    if nlq.files:
        return _serve_file(nlq.files[0].replace("\\", "/"), read_file)
    # journalServer.ServeHTTP
    if method not in ("GET", "POST"):
        return Answer(405, "Method not allowed\n")
    known = providers or {}
    native = [s for s in nlq.services if s in known]
    files = [s for s in nlq.services if s not in known]
    out = ""
    if native:
        out += _service_events(nlq, [e for s in native for e in known[s]])
    if files and nlq.has_options():
        return Answer(
            200,
            out + f"\noptions present and query resolved to log files for [{' '.join(files)}]\n"
            "try without specifying options\n",
        )
    for service in files:
        out += _copy_file_logs(service, read_file)
    return Answer(200, out)


def _serve_file(path: str, read_file: ReadFile) -> Answer:
    # http.FileServer(http.Dir(nodeLogDir)): a file below the directory, 404 otherwise. Directory
    # listings are not modelled (the host model keeps files, not directories).
    content = _in_log_dir(path, read_file)
    if content is None:
        return Answer(404, "404 page not found\n")
    return Answer(200, content.decode("utf-8", errors="replace"))
