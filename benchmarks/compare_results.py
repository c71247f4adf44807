"""Compare two runs' tables and scorecards byte for byte (a refactor must not move a number).

    python benchmarks/compare_results.py RESULTS_BEFORE RESULTS_AFTER

Compares every ``*/tables/*.csv`` and ``scorecard/*.csv`` under the two ``results/`` folders and
prints one line per file: ``same``, ``DIFFERENT`` (with the first differing line) or ``missing``.
Exit status 1 when any file differs or is missing on one side.
"""

from __future__ import annotations

import sys
from pathlib import Path

PATTERNS = ("*/tables/*.csv", "scorecard/*.csv")


def tables(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for pattern in PATTERNS for p in root.glob(pattern)}


def first_difference(a: bytes, b: bytes) -> str:
    for i, (x, y) in enumerate(zip(a.splitlines(), b.splitlines(), strict=False), start=1):
        if x != y:
            return f"line {i}: {x[:80]!r} != {y[:80]!r}"
    return f"lengths {len(a.splitlines())} vs {len(b.splitlines())} lines"


def compare(before: Path, after: Path) -> int:
    names = sorted(tables(before) | tables(after))
    bad = 0
    for name in names:
        a, b = before / name, after / name
        if not a.exists() or not b.exists():
            print(f"missing  {name} ({'before' if not a.exists() else 'after'})")
            bad += 1
        elif a.read_bytes() == b.read_bytes():
            print(f"same     {name}")
        else:
            print(f"DIFFERENT {name}: {first_difference(a.read_bytes(), b.read_bytes())}")
            bad += 1
    print(f"{len(names) - bad} of {len(names)} files identical")
    return 1 if bad or not names else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(compare(Path(sys.argv[1]), Path(sys.argv[2])))
