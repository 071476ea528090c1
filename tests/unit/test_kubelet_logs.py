"""The node log query of the emulated kubelet, against the rules of kubelet v1.37.2 on Windows
(pkg/kubelet/kubelet.go Run, pkg/kubelet/kubelet_server_journal.go, kubelet_server_journal_windows.go)."""

from __future__ import annotations

import datetime

import pytest

from winnode.testing.kubelet.logs import Event, answer

KUBELET_LOG = b"I1204 10:00:00.000000 1 server.go:1] kubelet started\nI1204 10:00:01.000000 2 x.go:2] ready\n"
FILES = {
    "C:\\var\\log\\kubelet.log": KUBELET_LOG,
    "C:\\var\\log\\kube-proxy\\kube-proxy.log": b"proxy line\n",
    "C:\\k\\logs\\other.log": b"outside the log dir\n",
}


def read(path: str) -> bytes | None:
    return FILES.get(path)


def ask(query: dict[str, list[str]], path: str = "", method: str = "GET", **kw: object) -> tuple[int, str]:
    result = answer(method, path, query, read_file=read, **kw)  # type: ignore[arg-type]
    return result.status, result.body


def test_query_kubelet_reads_the_file_under_the_node_log_dir() -> None:
    assert ask({"query": ["kubelet"]}) == (200, KUBELET_LOG.decode())


def test_service_name_heuristics_try_name_dot_log_and_a_folder_of_its_own() -> None:
    assert ask({"query": ["kube-proxy"]}) == (200, "proxy line\n")


def test_a_service_without_a_file_or_provider_is_not_found_with_200() -> None:
    assert ask({"query": ["containerd"]}) == (200, "\nlog not found for containerd\n")


def test_files_outside_the_log_dir_are_never_served() -> None:
    assert ask({}, path="../../k/logs/other.log")[0] == 404
    status, body = ask({"query": ["..\\..\\k\\logs\\other.log"]})
    assert status == 406
    assert "no such file or directory" in body


@pytest.mark.parametrize(
    ("query", "status", "text"),
    [
        (
            {"query": ["kube$let"]},
            406,
            'query: Invalid value: "kube$let": input contains unsupported characters',
        ),
        ({"query": [" "]}, 400, "may not be empty"),
        ({"query": ["kubelet"], "tailLines": ["x"]}, 400, 'tailLines: Invalid value: "x"'),
        ({"query": ["kubelet"], "tailLines": ["100001"]}, 406, "must be between 0 and 100000, inclusive"),
        ({"query": ["kubelet"], "sinceTime": ["yesterday"]}, 400, "invalid time format"),
        ({"query": ["kubelet"], "boot": ["0"]}, 406, "not supported on Windows"),
        ({"query": ["kubelet"], "pattern": ["("]}, 406, "pattern: Invalid value"),
        ({"query": ["a", "b", "c", "d", "e"]}, 406, "query: Too many: 5: must have at most 4 items"),
        ({"query": ["kubelet", "x/kubelet.log"]}, 406, "cannot specify a file and service"),
        ({"tailLines": ["5"]}, 406, "query: Required value: cannot be empty with options"),
        (
            {
                "query": ["kubelet"],
                "sinceTime": ["2026-12-04T10:00:00Z"],
                "untilTime": ["2026-12-03T10:00:00Z"],
            },
            406,
            "must be after `sinceTime`",
        ),
    ],
)
def test_refusals_match_the_real_kubelet(query: dict[str, list[str]], status: int, text: str) -> None:
    got_status, body = ask(query)
    assert got_status == status, body
    assert text in body


def test_a_path_in_query_mode_is_not_acceptable() -> None:
    assert ask({"query": ["kubelet"]}, path="kubelet.log") == (406, "path not allowed in query mode\n")


def test_options_on_a_file_logger_say_so_instead_of_filtering() -> None:
    status, body = ask({"query": ["kubelet"], "tailLines": ["1"]})
    assert status == 200
    assert "options present and query resolved to log files for [kubelet]" in body
    assert "kubelet started" not in body


def test_event_providers_honour_the_options() -> None:
    t0 = datetime.datetime(2026, 12, 4, 10, tzinfo=datetime.UTC)
    events = [Event(t0 + datetime.timedelta(seconds=i), f"containerd event {i}") for i in range(5)]
    status, body = ask(
        {"query": ["containerd"], "tailLines": ["3"], "pattern": ["EVENT [34]"]},
        providers={"containerd": events},
    )
    assert status == 200
    assert body.splitlines() == [
        f"{(t0 + datetime.timedelta(seconds=i)).isoformat()} containerd event {i}" for i in (3, 4)
    ]


def test_no_query_serves_the_file_at_the_path() -> None:
    assert ask({}, path="kubelet.log") == (200, KUBELET_LOG.decode())
