"""The one table that ``benchmarks/gpu_check.sh`` prints at its end, from the files of its run.

Reads ``<out>/steps.tsv`` (step, exit status, seconds), ``<out>/bench.jsonl`` (one JSON line per
recipe from ``bench_training.py --summary`` and ``bench_mil.py --summary``), the Snakemake log
and, after a real run, the GPU rules' benchmark files (``<out>/rule_benchmarks``). Exits 1 when
a step failed, a recipe is missing or a GPU rule ran no job, so the script's status says it.

Usage: ``python benchmarks/gpu_check_summary.py OUT --rules train_effnet_ham ...``
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

#: The rows the benchmarks must give: bench_training's recipes and gcn_mil's extraction.
EXPECTED_RECIPES = (
    "effnet_ham",
    "siim2020",
    "gradcam_overlap_vgg16",
    "gradcam_overlap_resnet50",
    "gcn_mil extraction default 1/7",
)


def _steps(out: Path) -> list[tuple[str, str, str]]:
    path = out / "steps.tsv"
    if not path.exists():
        return []
    return [tuple(line.split("\t")) for line in path.read_text().splitlines() if line.strip()]


def _bench_rows(out: Path) -> list[dict]:
    path = out / "bench.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _number(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _rule_jobs(out: Path, rules: list[str]) -> dict[str, dict]:
    """Jobs and wall seconds per GPU rule: benchmark files after a run, else the dry-run plan."""
    found = {rule: {"jobs": 0, "seconds": None} for rule in rules}
    benchmarks = out / "rule_benchmarks"
    for rule in rules:
        files = sorted((benchmarks / rule).rglob("*.tsv")) if benchmarks.is_dir() else []
        for path in files:
            with path.open(encoding="utf-8") as handle:
                record = next(csv.DictReader(handle, delimiter="\t"))
            found[rule]["jobs"] += 1
            found[rule]["seconds"] = (found[rule]["seconds"] or 0.0) + float(record["s"])
    log = out / "snakemake.log"
    if not benchmarks.is_dir() and log.exists():
        # A dry run's job table: "<rule>  <count>" lines.
        for line in log.read_text(errors="replace").splitlines():
            match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
            if match and match.group(1) in found:
                found[match.group(1)]["jobs"] = int(match.group(2))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="gpu_check.sh's output folder")
    parser.add_argument("--rules", nargs="*", default=[], help="the GPU rules of the workflow")
    args = parser.parse_args()
    failures = [
        f"step {name}: {status} (log {args.out / (name + '.log')})"
        for name, status, _ in _steps(args.out)
        if status != "0"
    ]
    rows = _bench_rows(args.out)
    width = max(len(r) for r in EXPECTED_RECIPES) + 2
    print(f"\n== gpu_check summary ({args.out})")
    header = "recipe".ljust(width)
    print(f"{header} device  AMP        images/s  peak GPU MiB  loader/step")
    for row in rows:
        unit = " blocks/s" if row.get("unit") == "blocks/s" else ""
        print(
            f"{row['recipe']:<{width}} {row['device']:<7} {row['amp_dtype']:<9} "
            f"{row['images_per_s']:9.1f}  {_number(row.get('peak_memory_mib'), '12.0f'):>12}  "
            f"{_number(row.get('loader_step_ratio'), '10.2f'):>10}{unit}"
        )
    seen = {row["recipe"] for row in rows}
    failures += [f"no benchmark row for {name}" for name in EXPECTED_RECIPES if name not in seen]
    if args.rules:
        print(f"\n{'GPU rule'.ljust(width)} jobs  wall s")
        for rule, info in _rule_jobs(args.out, args.rules).items():
            print(f"{rule:<{width}} {info['jobs']:4d}  {_number(info['seconds'], '6.1f'):>6}")
            if info["jobs"] == 0:
                failures.append(f"GPU rule {rule}: no job ran or was planned")
    pytest_log = args.out / "pytest.log"
    if pytest_log.exists():
        lines = pytest_log.read_text(errors="replace").strip().splitlines()
        print(f"\npytest -m gpu: {lines[-1] if lines else '(no output)'}")
    print(f"\nsteps: {', '.join(f'{n} {s} ({t} s)' for n, s, t in _steps(args.out)) or 'none'}")
    if failures:
        print("FAILURES:")
        for failure in failures:
            print(f"  {failure}")
        return 1
    print("all steps passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
