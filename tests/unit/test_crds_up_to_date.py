from __future__ import annotations

import difflib
from pathlib import Path

from winnode.deploy import crdgen

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_crds_match_models() -> None:
    expected = crdgen.render_all()
    on_disk = {p.name: p.read_text() for p in sorted(CRDS.glob("*.yaml"))}
    problems = []
    for name in sorted(expected.keys() - on_disk.keys()):
        problems.append(f"crds/{name} is missing")
    for name in sorted(on_disk.keys() - expected.keys()):
        problems.append(f"crds/{name} is not generated from any model (stale?)")
    for name in sorted(expected.keys() & on_disk.keys()):
        if expected[name] != on_disk[name]:
            diff = difflib.unified_diff(
                on_disk[name].splitlines(),
                expected[name].splitlines(),
                f"crds/{name} (on disk)",
                f"crds/{name} (from the models)",
                lineterm="",
                n=1,
            )
            problems.append("\n".join(list(diff)[:40]))
    assert not problems, "crds/ differs from the models; run `make crds`:\n" + "\n".join(problems)
