"""One target file per GPU rule, for ``benchmarks/gpu_check.sh``, from a Snakemake dry run.

The default config plans 29 GPU jobs (16 siim2020 trainings alone), one at a time with
``--resources gpu=1``: more than the check's 8 minutes. One job of each rule proves the rule on
CUDA; which job is the first by output path, so reruns take the same. The rules upstream of
the targets (evaluate_gcn_mil needs train_gcn_mil and extract_gcn_mil_features) run with them.

Usage: ``python benchmarks/gpu_check_targets.py DRY_RUN_LOG RULE...`` prints one path a line.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path


def first_outputs(dry_run_log: str, rules: list[str]) -> dict[str, str]:
    """The first output file of each rule's first job (by path) in a ``snakemake -n`` log."""
    outputs: dict[str, list[str]] = {rule: [] for rule in rules}
    rule = None
    for line in dry_run_log.splitlines():
        header = re.fullmatch(r"(?:local)?rule (\w+):", line.strip())
        if header:
            rule = header.group(1)
        elif rule in outputs and line.strip().startswith("output:"):
            outputs[rule].append(line.split(":", 1)[1].split(",")[0].strip())
    missing = [rule for rule, paths in outputs.items() if not paths]
    if missing:
        raise SystemExit(f"no job of {missing} in the dry run (already done, or renamed?)")
    return {rule: min(paths) for rule, paths in outputs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="output of snakemake --dry-run (not --quiet)")
    parser.add_argument("rules", nargs="+")
    args = parser.parse_args()
    for path in first_outputs(args.log.read_text(errors="replace"), args.rules).values():
        print(path)


if __name__ == "__main__":
    main()
