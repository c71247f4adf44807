"""The trainings report (issue 22): one row per training of every paper, learning curves per paper,
and the rules that build them in the default workflow."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from test_workflow import _copy_workflow, _jobs, snakemake

from melrepro.methods.training import TrainOptions, TrainResult, run_summary
from melrepro.report.trainings import (
    COLUMNS,
    draw_learning_curves,
    plot_learning_curves,
    read_training,
    training_table,
)


def _core_training(folder: Path, *, seconds, best_epoch, paper_keys, device="cpu", threads=2,
                   gpu_names=(), **options) -> Path:  # fmt: skip
    """A training-core output folder: history.csv, and metrics.json whose run keys come from the
    core's own run_summary (so a renamed key breaks this test, not only the real run)."""
    folder.mkdir(parents=True)
    history = pd.DataFrame(
        {
            "epoch": range(1, len(seconds) + 1),
            "train_loss": [1.0 / (e + 1) for e in range(len(seconds))],
            "val_loss": [1.2 / (e + 1) + 0.01 * e for e in range(len(seconds))],
            "lr": 1e-3,
            "frozen": False,
            "seconds": seconds,
        }
    )
    history.to_csv(folder / "history.csv", index=False)
    result = TrainResult(
        model=None,
        history=history,
        best_epoch=best_epoch,
        best_score=0.0,
        device=device,
        weights="random_init",
        torch_threads=threads,
    )
    summary = run_summary(result, TrainOptions.from_dict(options))
    (folder / "metrics.json").write_text(json.dumps({**paper_keys, **summary}))
    gpu = {"source": "slots", "devices": [{"index": 0, "name": n} for n in gpu_names]}
    (folder / "run_info.json").write_text(json.dumps({"device": device, "gpu": gpu, "seed": 1}))
    return folder / "history.csv"


@pytest.fixture
def trainings(tmp_path):
    """One training per paper's format, with known counts, seconds and settings."""
    results = tmp_path / "results"
    effnet = _core_training(
        results / "effnet_ham/models/baseline2",
        seconds=[2.0, 3.0, 2.5, 2.5],  # 10 s for 4 epochs of 100 images: 40 images/s
        best_epoch=3,
        device="cuda",
        threads=8,
        gpu_names=["NVIDIA H200"],
        paper_keys={
            "variant": "baseline2",
            "val": {"auroc": 0.91},
            "n_images": {"train": 100, "val": 20, "test": 30},
        },  # fmt: skip
        backbone="efficientnet_b0",
        epochs=6,
        seed=7,
        monitor="val_auroc",
    )
    siim = _core_training(
        results / "siim2020/models/patient/sex/small",
        seconds=[1.0, 4.0],  # 5 s for 2 epochs of 200 rows: 80 images/s
        best_epoch=2,
        paper_keys={
            "model": "sex",
            "dataset": "small",
            "val_auroc": 0.87,
            "n_train": 200,
            "n_images": {"train": 999},
        },  # fmt: skip
        backbone="resnet18",
        epochs=10,
        seed=2024,
        monitor="val_loss",
    )
    gradcam = _core_training(
        results / "gradcam_overlap/models/vgg16",
        seconds=[5.0, 5.0],  # 10 s for 2 epochs of 50 images: 10 images/s
        best_epoch=1,
        threads=1,
        paper_keys={
            "model": "vgg16",
            "best_val_accuracy": 0.6,
            "n_images": {"train": 50, "val": 10},
        },  # fmt: skip
        backbone="vgg16_bn",
        epochs=2,
        seed=3,
        monitor="val_accuracy",
    )
    gcn_folder = results / "gcn_mil/models/stride"
    gcn_folder.mkdir(parents=True)
    pd.DataFrame(
        {
            "epoch": [0, 1, 2],
            "lr": 1e-3,
            "train_loss": [1.1, 0.9, 0.8],
            "train_accuracy": [0.4, 0.5, 0.6],
            "val_loss": [1.0, 0.95, 0.7],
            "val_accuracy": [0.5, 0.55, 0.65],
            "seconds": [3.0, 2.0, 1.0],
        }
    ).to_csv(gcn_folder / "run-1_history.tsv", sep="\t", index=False)
    gcn_info = {"device": "cpu", "seed": 2024, "config": {"train": {"epochs": 12}}}
    (gcn_folder / "run_info.json").write_text(json.dumps(gcn_info))
    return [effnet, siim, gradcam, gcn_folder / "run-1_history.tsv"]


def test_table_has_one_row_per_training_with_known_values(trainings):
    table = training_table(trainings).set_index("paper")
    assert list(table.reset_index().columns) == COLUMNS
    assert list(table.index) == ["effnet_ham", "siim2020", "gradcam_overlap", "gcn_mil"]

    effnet = table.loc["effnet_ham"]
    assert effnet["images/s"] == pytest.approx(100 * 4 / 10.0)
    assert effnet["wall time (s)"] == pytest.approx(10.0)
    assert (effnet["best epoch"], effnet["epochs run"], effnet["epochs planned"]) == (3, 4, 6)
    assert effnet["device"] == "cuda (NVIDIA H200)"
    assert (effnet["torch threads"], effnet["seed"]) == (8, 7)
    assert (effnet["model"], effnet["variant"]) == ("efficientnet_b0", "baseline2")
    assert (effnet["validation metric"], effnet["validation value"]) == ("val AUROC", 0.91)
    assert effnet["best epoch chosen by"] == "val_auroc"

    siim = table.loc["siim2020"]
    # n_train (the rows one epoch trains on, copies included) wins over the split count
    assert siim["training images"] == 200
    assert siim["images/s"] == pytest.approx(200 * 2 / 5.0)
    assert (siim["best epoch"], siim["epochs run"], siim["epochs planned"]) == (2, 2, 10)
    assert (siim["device"], siim["torch threads"], siim["seed"]) == ("cpu", 2, 2024)
    assert siim["training"] == "patient/sex/small"
    assert siim["validation value"] == 0.87
    assert siim["final val loss"] == pytest.approx(1.2 / 2 + 0.01)

    gradcam = table.loc["gradcam_overlap"]
    assert gradcam["images/s"] == pytest.approx(10.0)
    assert gradcam["model"] == "vgg16 (vgg16_bn)"
    assert (gradcam["validation metric"], gradcam["validation value"]) == ("val accuracy", 0.6)

    gcn = table.loc["gcn_mil"]
    # 0-based epochs of gcn_mil's loop read 1-based; the last epoch is the kept model
    assert (gcn["best epoch"], gcn["epochs run"], gcn["epochs planned"]) == (3, 3, 12)
    assert gcn["seed"] == 2024 + 1
    assert gcn["wall time (s)"] == pytest.approx(6.0)
    assert gcn["validation value"] == 0.65
    # a gcn_mil run without run-<R>_metrics.json (trained before it was written) records neither
    # its threads nor its training-set size: empty, not invented
    assert pd.isna(gcn["torch threads"])
    assert pd.isna(gcn["training images"])
    assert math.isnan(gcn["images/s"])


def test_a_further_seed_is_a_training_of_its_own(tmp_path):
    """Check a seed-<i>/ folder (n_seeds > 1) reads as its model's training, named by its seed."""
    common = {"best_epoch": 1, "backbone": "resnet18", "epochs": 2, "monitor": "val_loss"}
    keys = {"val_auroc": 0.8, "n_train": 10}
    first = _core_training(
        tmp_path / "results/siim2020/models/patient/base/all",
        seconds=[1.0, 1.0], paper_keys=keys, seed=2024, **common,
    )  # fmt: skip
    second = _core_training(
        tmp_path / "results/siim2020/models/patient/base/all/seed-1",
        seconds=[1.0, 2.0], paper_keys=keys, seed=3024, **common,
    )  # fmt: skip
    table = training_table([first, second])
    assert table["training"].tolist() == ["patient/base/all", "patient/base/all/seed-1"]
    assert table["variant"].tolist() == [
        "all, patient protocol",
        "all, patient protocol, seed-1",
    ]
    assert table["seed"].tolist() == [2024, 3024]
    assert table["model"].nunique() == 1


def test_a_core_training_without_metrics_is_refused(trainings):
    (trainings[0].parent / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        read_training(trainings[0])
    with pytest.raises(ValueError, match="models"):
        read_training(Path("elsewhere/history.csv"))


def test_learning_curves_one_panel_per_training_with_both_losses(trainings, tmp_path):
    siim = trainings[1]
    # five siim2020 trainings in 4 columns: 2 rows, 5 panels shown
    more = []
    for k, dataset in enumerate(["all", "small3aug", "small5aug", "tiny"]):
        folder = siim.parent.parent / dataset
        folder.mkdir()
        for name in ("history.csv", "metrics.json", "run_info.json"):
            (folder / name).write_bytes((siim.parent / name).read_bytes())
        history = pd.read_csv(folder / "history.csv")
        history["train_loss"] += k + 1  # each panel its own curve
        history.to_csv(folder / "history.csv", index=False)
        more.append(folder / "history.csv")
    paths = [siim, *more]
    fig = draw_learning_curves(paths)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == len(paths)
    for k, (ax, path) in enumerate(zip(shown, paths, strict=True)):
        history = pd.read_csv(path)
        train, val, best = ax.get_lines()
        assert list(train.get_ydata()) == list(history["train_loss"])
        assert list(val.get_ydata()) == list(history["val_loss"])
        assert list(best.get_xdata()) == [2, 2]  # the best epoch of metrics.json
        assert "sex" in ax.get_title()
        assert k == 0 or list(train.get_ydata()) != list(shown[0].get_lines()[0].get_ydata())
    assert "siim2020" in fig.get_suptitle()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "training loss",
        "validation loss",
        "best (kept) epoch",
    ]
    out = plot_learning_curves(paths, tmp_path / "curves.png")
    assert out.stat().st_size > 10_000
    assert out.with_suffix(".pdf").exists()
    with pytest.raises(ValueError, match="one paper"):
        draw_learning_curves(trainings[:2])


def test_dry_run_plans_the_trainings_report(tmp_path):
    """The default target plans the table and one learning-curve figure per training paper, and the
    table waits for every training."""
    workdir = _copy_workflow(tmp_path)
    jobs = _jobs(snakemake("-n", "--quiet", "rules", cwd=workdir).stdout)
    assert jobs["tabulate_trainings"] == 1
    # every active paper trains except sp_graphs (classical classifiers)
    assert jobs["plot_learning_curves"] == 4
    planned = snakemake("-n", "results/trainings/trainings.csv", cwd=workdir).stdout
    for rule in ("train_effnet_ham", "train_siim2020", "train_gradcam_overlap", "train_gcn_mil"):
        assert f"rule {rule}:" in planned, rule
    curves = snakemake("-n", "results/trainings/learning_curves_gcn_mil.png", cwd=workdir).stdout
    assert "rule train_gcn_mil:" in curves
    assert "rule train_effnet_ham:" not in curves
