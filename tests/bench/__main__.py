"""`make bench`: run every tests/bench/*_bench.py module's main() in turn.

Benchmarks print tables and write JSON under bench-results/; they are never timed assertions.
Run one with `python -m tests.bench winrm` (matching on the module name).
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(p.stem for p in here.glob("*_bench.py"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    failed = 0
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        start = time.monotonic()
        try:
            importlib.import_module(f"tests.bench.{name}").main()
        except Exception as exc:  # one broken benchmark must not hide the others' tables
            failed += 1
            print(f"{name} failed: {exc!r}", file=sys.stderr)
        print(f"({name}: {time.monotonic() - start:.1f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
