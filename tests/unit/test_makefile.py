"""Every Makefile target the README names can be made: each prerequisite is a target or a file.

A prerequisite naming nothing fails only when that target is run (`make bench` stopped with "No rule
to make target"), and the default suite never runs `bench`, `demo` or `test-slow`."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULE = re.compile(r"^([A-Za-z0-9_.$()/-]+)\s*:(?!=)\s*(.*)$")


def rules() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith(("\t", "#", " ")):
            continue
        match = RULE.match(line)
        if match:
            found[match.group(1)] = match.group(2).split()
    return found


def test_every_prerequisite_is_a_target_or_a_file() -> None:
    found = rules()
    assert {"test", "test-fast", "test-slow", "bench", "demo", "tools", "control-plane"} <= set(found)
    missing = {
        (target, prerequisite)
        for target, prerequisites in found.items()
        for prerequisite in prerequisites
        if "$" not in prerequisite and prerequisite not in found and not (ROOT / prerequisite).exists()
    }
    assert not missing, f"Makefile prerequisites with no rule and no file: {sorted(missing)}"
