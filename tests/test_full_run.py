"""The embedded default run, whole: every artifact, the report, and what its numbers can show.

One `snakemake --cores 2` run of a scratch copy serves every test of this module (the fixture
`default_run`); the tests after it read its results. Set MELREPRO_FULL_RUN_DIR to a workflow
folder that already holds a finished (or partial) default run to check its results without
running anything: e.g. while tuning one paper, run its targets, then
`MELREPRO_FULL_RUN_DIR=$PWD pytest tests/test_full_run.py -k siim2020`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from test_workflow import _copy_workflow, snakemake

#: The artifact ids of ../shared/ARTIFACTS.md for the papers built so far.
EXPECTED_ARTIFACTS = {
    "gcn_mil": [f"table{i:02d}" for i in range(1, 6)] + [f"fig{i:02d}" for i in range(1, 7)],
    "sp_graphs": [f"table{i:02d}" for i in range(1, 13)] + [f"fig{i:02d}" for i in range(1, 7)],
    "effnet_ham": ["table01"] + [f"fig{i:02d}" for i in range(1, 7)],
    "siim2020": ["table01", "table02"] + [f"fig{i:02d}" for i in (2, 3, 4, *range(8, 18))],
    "gradcam_overlap": [f"table{i:02d}" for i in range(7)] + [f"fig{i:02d}" for i in range(1, 6)],
}


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> Path:
    """The folder of a finished default run (`snakemake --cores 2` in a scratch copy)."""
    given = os.environ.get("MELREPRO_FULL_RUN_DIR")
    if given:
        return Path(given)
    workdir = _copy_workflow(tmp_path_factory.mktemp("default_run"))
    snakemake("--cores", "2", cwd=workdir)
    return workdir


def _needs(workdir: Path, *relative: str) -> None:
    """Skip (only when reading a given partial run) where the files a test reads are absent."""
    missing = [name for name in relative if not (workdir / name).exists()]
    if missing and os.environ.get("MELREPRO_FULL_RUN_DIR"):
        pytest.skip(f"not in the given run: {missing}")


def test_full_default_run_builds_every_artifact(default_run):
    """Check `snakemake` on the embedded default builds every artifact id and the scorecard."""
    workdir = default_run
    for paper, ids in EXPECTED_ARTIFACTS.items():
        for artifact in ids:
            kind = "tables" if artifact.startswith("table") else "figures"
            suffixes = (".csv", ".md") if kind == "tables" else (".png", ".pdf")
            for suffix in suffixes:
                assert (workdir / f"results/{paper}/{kind}/{artifact}{suffix}").exists(), artifact
        card = pd.read_csv(workdir / f"results/scorecard/{paper}.csv")
        assert card["reproduced_value"].notna().mean() > 0.9, paper
        assert set(card["data_source"]) == {"synthetic"}
    assert "effnet_ham" in (workdir / "results/scorecard/summary.md").read_text()


def test_siim2020_submission_and_signal(default_run):
    """Check the submission covers the test set and the base model finds the twin's signal."""
    workdir = default_run
    _needs(workdir, "results/siim2020/submission/submission.csv")
    submission = pd.read_csv(workdir / "results/siim2020/submission/submission.csv")
    test_metadata = pd.read_csv(workdir / "resources/archives/isic2020/ISIC_2020_Test_Metadata.csv")
    assert list(submission["image_name"]) == list(test_metadata["image"])
    # the twin has a signal the base model finds (melanomas darker, older, more often male)
    table01 = pd.read_csv(workdir / "results/siim2020/tables/table01.csv").set_index("Model")
    assert table01.loc["Base All", "Validation ROC-AUC"] > 0.7
    assert submission["target"].nunique() > 1


def test_gradcam_overlap_classifiers_not_degenerate(default_run):
    """Check more than one predicted class and probabilities that vary across test images."""
    workdir = default_run
    for model in ("vgg16", "resnet50"):
        path = workdir / f"results/gradcam_overlap/models/{model}/metrics.json"
        _needs(workdir, str(path.relative_to(workdir)))
        metrics = json.loads(path.read_text())
        assert metrics["n_predicted_classes"] > 1, model
        assert metrics["test_probability_sd"] > 1e-3, model


#: Union J-mean a gradcam_overlap model must exceed the all-white map's and its label-shuffled
#: control's by: ~2.5 standard errors of a mean over the twin's ~40 MEL/NV task-2 images (per-image
#: union Jaccard SD ~0.06), and ~6 % of the twin's gap between all-white (~0.08) and the 7x7
#: oracle ceiling (~0.40).
GRADCAM_JACCARD_MARGIN = 0.02


def test_gradcam_overlap_key_table_discriminates(default_run):
    """Check each model's union Jaccard (table02/table03) beats the all-white map and its
    label-shuffled control by GRADCAM_JACCARD_MARGIN and stays below the oracle ceiling, and no
    model's overall or balanced accuracy (table00) is 1.000."""
    workdir = default_run
    tables = workdir / "results/gradcam_overlap/tables"
    _needs(workdir, *(f"results/gradcam_overlap/tables/table0{k}.csv" for k in (0, 2, 3)))
    table00 = pd.read_csv(tables / "table00.csv").set_index(["Model", "Class"])
    for model in ("VGG16", "RESNET50"):
        overall = table00.loc[(model, "All")]
        assert overall["Overall accuracy"] < 1.0, model
        assert overall["Balanced accuracy"] < 1.0, model
    for table_id, model in (("table02", "VGG16"), ("table03", "RESNET50")):
        table = pd.read_csv(tables / f"{table_id}.csv").set_index("Feature")
        union = table.loc["Union"]
        control = table.loc["Union (label-shuffled control)"]
        assert union["J-mean"] >= union["All-white J-mean"] + GRADCAM_JACCARD_MARGIN, model
        assert union["J-mean"] >= control["J-mean"] + GRADCAM_JACCARD_MARGIN, model
        assert union["J-mean"] <= union["Oracle J-mean"], model
        # the ceiling can resolve the union at all (the 64 px ResNet50 grid of 2x2 could not)
        assert union["Oracle J-mean"] >= 2 * union["All-white J-mean"], model


# Tests of what each paper's key table can show go here, above the two that must come last.


def test_report_of_the_default_run(default_run):
    """Check the Snakemake report builds with every artifact (runs after the result checks)."""
    workdir = default_run
    if os.environ.get("MELREPRO_FULL_RUN_DIR"):
        pytest.skip("a given run is only read")
    snakemake("--report", "results/report.html", cwd=workdir)
    assert (workdir / "results/report.html").stat().st_size > 100_000


def test_second_run_has_nothing_to_do(default_run):
    """Check a second `snakemake` on a finished default run plans nothing (the last test here)."""
    workdir = default_run
    if os.environ.get("MELREPRO_FULL_RUN_DIR"):
        pytest.skip("a given run is only read")
    again = snakemake("--cores", "2", cwd=workdir)
    assert "Nothing to be done" in again.stdout + again.stderr
