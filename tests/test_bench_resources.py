"""benchmarks/bench_resources.py runs every measurement (toy sizes) and its FAIL logic works.

The figures of --quick are not meaningful; what is asserted is the table: one row per covered
rule, a declaration below the need flagged (and the exit status 1), one far above it not."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
COVERED = [
    "check_images",
    "cache_images",
    "train_gradcam_overlap[vgg16]",
    "train_gradcam_overlap[resnet50]",
    "train_effnet_ham",
    "train_siim2020",
    "compute_gradcam_overlap",
    "count_cells",
    "extract_sp_graphs_features",
    "extract_gcn_mil_features",
    "train_gcn_mil",
    "evaluate_gcn_mil",
]


@pytest.mark.slow
def test_bench_resources_quick_has_every_rule_and_flags_a_low_declaration():
    """Check --quick prints one row per covered rule, FAILs check_images declared at 1 MB and
    1 minute (every need is above), passes count_cells declared at 1e9, and exits 1."""
    declare = {
        "check_images": {"mem_mb": 1, "runtime": 0},
        "count_cells": {"mem_mb": 1e9, "runtime": 1e9},
    }
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "bench_resources.py"),
            "--quick",
            "--declare",
            json.dumps(declare),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout.split("\n\n")[-2 if "FAIL:" in proc.stdout.split("\n\n")[-1] else -1]
    rows = {line.split()[0]: line for line in table.splitlines()[2:] if line.strip()}
    assert sorted(rows) == sorted(COVERED), rows.keys()
    assert "FAIL mem_mb+runtime" in rows["check_images"]
    assert " ok " in rows["count_cells"]
    assert "check_images" in proc.stdout.splitlines()[-1]


def test_write_doc_counts_seed_jobs_as_their_rule_and_gives_the_wall_time_range(tmp_path):
    """Check docs/real_run.md's sums on made-up rows: a `_seed` rule's jobs take its first seed's
    paper and measured hours, an untimed rule counts at its declared runtime in the upper bound
    only, and the wall time is the range between the two."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_resources as bench
    finally:
        sys.path.remove(str(BENCHMARKS))
    rows = [bench.Row("train_siim2020", 24000, 720, 12000, 60.0, "made up", gpu=True)]
    jobs = {"train_siim2020": 2, "train_siim2020_seed": 4, "check_images": 80}
    declared = {"check_images": {"mem_mb": 3000, "runtime": 60}}
    doc = tmp_path / "real_run.md"
    bench.write_doc(doc, rows, jobs, declared, 1.0, quick=False, cache_sets=set())
    text = doc.read_text()
    siim = next(line for line in text.splitlines() if line.startswith("| siim2020 |"))
    # 6 trainings x 60 min on the GPU; no job of the seed rule lands in "report"
    assert siim.split("|")[2].strip() == "6"
    assert siim.split("|")[4].strip() == "6.0"
    assert "| report |" not in text
    # 80 check_images jobs untimed at 60 min: 80 CPU-hours, 10 h on 8 cores; GPU 6 h / 2 = 3 h
    assert "Between 3 h and 10 h" in text
    assert "check_images 80 h" in text
