"""The workflow itself: dry runs on both configs, lint, and a real run of the data part on tiny data."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml
from conftest import tiny_spec

from melrepro.data.layouts import DATASETS
from melrepro.data.synthetic import CLASSES

ROOT = Path(__file__).resolve().parents[1]
COPIED = ["Snakefile", "workflow", "scripts", "config", "envs", "profiles", "src", "docs"]


def snakemake(*args: str, cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def _jobs(dry_run_output: str) -> dict[str, int]:
    counts = {}
    for line in dry_run_output.splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match:
            counts[match.group(1)] = int(match.group(2))
    return counts


def test_dry_run_default_config_plans_every_paper(tmp_path):
    """Check `snakemake -n` in a fresh clone plans the synthetic archives, ingest and every active paper."""
    workdir = _copy_workflow(tmp_path)
    result = snakemake("-n", "--quiet", "rules", cwd=workdir)
    jobs = _jobs(result.stdout + result.stderr)
    for dataset in DATASETS:
        assert jobs.get(f"make_synthetic_{dataset}") == 1
    assert jobs["ingest_dataset"] == len(DATASETS)
    assert jobs["summarize_scorecard"] == 1
    for paper, figure in {"gcn_mil": "fig01", "sp_graphs": "fig04", "effnet_ham": "fig04"}.items():
        assert jobs[f"draw_rulegraph_{paper}"] == 1, figure
    # gcn_mil: both readings of Eq. 1 (block, stride) x n_runs = 1, on one set of features, and
    # the label-shuffled control (one run of the block reading)
    assert jobs["train_gcn_mil"] == jobs["evaluate_gcn_mil"] == 2 * 1 + 1
    # siim2020: 3 models x 4 datasets (patient split) + the base model under the author's
    # protocol + the label-shuffled control (Base All)
    assert jobs["train_siim2020"] == 12 + 4 + 1
    assert jobs["build_siim2020_datasets"] == 2
    assert jobs["prepare_siim2020_images"] == 2  # one per isic2020 shard
    assert not (workdir / "results").exists()
    assert not (workdir / "resources").exists()


def test_dry_run_real_config_has_hundreds_of_jobs_without_archives(tmp_path):
    """Check the real-scale DAG builds without archives: one download per file, hundreds of jobs."""
    workdir = _copy_workflow(tmp_path)
    result = snakemake("-n", "--quiet", "rules", "--configfile", "config/isic.yaml", cwd=workdir)
    jobs = _jobs(result.stdout + result.stderr)
    total = jobs.pop("total")
    assert 100 < total < 5000
    # The active papers read isic2017 (10 shards), the archive melanomas (1), task 3 (40),
    # isic2020 (150), task 2 (9) and isic2019 (85).
    assert jobs["check_images"] == 10 + 1 + 40 + 150 + 9 + 85
    assert jobs["ingest_dataset"] == 6
    files = sum(
        len(DATASETS[d].files())
        for d in ("isic2017", "isic2018_task3", "isic2020", "isic2018_task2", "isic2019")
    )
    assert jobs["download_archive_file"] == files
    assert jobs["download_archive_melanomas"] == 1
    assert jobs["verify_archives"] == 6
    # gcn_mil: one feature job per isic2017 shard; both Eq. 1 readings x the paper's 5 runs.
    assert jobs["extract_gcn_mil_features"] == 10
    assert jobs["train_gcn_mil"] == jobs["evaluate_gcn_mil"] == 2 * 5
    assert jobs["prepare_siim2020_images"] == 150
    assert jobs["train_siim2020"] == 16
    # gradcam_overlap: two models; Grad-CAM + Jaccard and cell counts per task-2 shard and grid.
    assert jobs["train_gradcam_overlap"] == 2
    assert jobs["compute_gradcam_overlap"] == 2 * 9
    assert jobs["count_cells"] == 2 * 9
    assert not any(name.startswith("make_synthetic") for name in jobs)


def test_lint_is_clean():
    """Check `snakemake --lint` finds nothing."""
    result = snakemake("--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_snakefmt_and_ruff_are_clean():
    """Check the rule files are snakefmt-formatted and the Python code ruff-clean."""
    binary = Path(sys.executable).parent
    for command in (
        [binary / "snakefmt", "--check", "Snakefile", "workflow/rules"],
        [binary / "ruff", "check", "."],
        [binary / "ruff", "format", "--check", "."],
    ):
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, (
            f"{command[0].name}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
        )


def _copy_workflow(tmp_path: Path) -> Path:
    workdir = tmp_path / "repo"
    workdir.mkdir()
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, workdir / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, workdir / name)
    return workdir


def _tiny_config(workdir: Path) -> Path:
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    # A --configfile replaces config.yaml (and merges over the schemas' defaults key by key):
    # name every class, so none is left over from the synthetic schema's defaults.
    config["data"]["synthetic"] = {}
    for dataset in DATASETS:
        spec = tiny_spec(dataset)
        spec["counts"] = {
            split: {c: spec["counts"].get(split, {}).get(c, 0) for c in CLASSES[dataset]}
            for split in [s.split for s in DATASETS[dataset].image_sets]
        }
        config["data"]["synthetic"][dataset] = spec
    config["data"]["n_shards"] = dict.fromkeys(DATASETS, 2)
    for value in config.values():
        if isinstance(value, dict) and "activate" in value:
            value["activate"] = False
    path = workdir / "config" / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_data_workflow_runs_on_tiny_config(tmp_path):
    """Check the data part runs end to end: archives -> manifests, splits, cache, class counts; reruns do nothing."""
    workdir = _copy_workflow(tmp_path)
    _tiny_config(workdir)
    targets = [
        "results/data/tables/class_counts.csv",
        "results/data/isic2018_task3/splits/lesion_70_15_15.parquet",
        "results/data/isic2020/splits/patient_85_15.parquet",
        "results/data/isic2017/cache/sq64/shard-000.npz",
        "results/data/isic2017/cache/sq64/shard-001.npz",
    ]
    snakemake(*targets, "--cores", "2", "--configfile", "config/tiny.yaml", cwd=workdir)
    for dataset in DATASETS:
        manifest = pd.read_parquet(workdir / f"results/data/{dataset}/manifest.parquet")
        truth = pd.read_csv(workdir / f"resources/archives/{dataset}/synthetic_truth/truth.csv")
        assert len(manifest) == len(truth)
        assert (workdir / f"results/data/{dataset}/run_info.json").exists()
        assert (workdir / f"logs/ingest_dataset/{dataset}.log").exists()
    counts = pd.read_csv(workdir / "results/data/tables/class_counts.csv")
    assert counts["total"].sum() == sum(
        len(pd.read_parquet(workdir / f"results/data/{d}/manifest.parquet")) for d in DATASETS
    )
    assert (workdir / "results/data/figures/class_counts.pdf").exists()
    split = pd.read_parquet(workdir / "results/data/isic2018_task3/splits/lesion_70_15_15.parquet")
    manifest = pd.read_parquet(workdir / "results/data/isic2018_task3/manifest.parquet")
    joined = manifest.merge(split, on="image_id")
    assert (joined.dropna(subset=["lesion_id"]).groupby("lesion_id")["split"].nunique() == 1).all()
    again = snakemake(*targets, "--cores", "2", "--configfile", "config/tiny.yaml", cwd=workdir)
    assert "Nothing to be done" in again.stdout + again.stderr
    snakemake("--report", "report.html", *targets, "--configfile", "config/tiny.yaml", cwd=workdir)
    report = (workdir / "report.html").read_text()
    assert "Number of images per class" in report  # the caption
    assert "class_counts.png" in report
