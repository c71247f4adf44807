"""Tests for melrepro.papers.effnet_ham: labels, lesion-grouped splits, and a tiny end-to-end run."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melrepro.papers import effnet_ham

LABELS = ["MEL", "NV", "BCC", "AKIEC", "BKL", "NV", "DF", "NV"]
RECIPE = dict(
    image_size=32,
    backbone="resnet18",
    epochs=2,
    freeze_epochs=1,
    batch_size=8,
    accumulation_steps=2,
    lr=1e-3,
)
RUN_INFO = {"data_source": "synthetic", "seed": 1, "pretrained": False, "device": "cpu"}


@pytest.fixture(scope="module")
def task3(tmp_path_factory):
    """A 48-image task-3 look-alike: manifest, lesion split, two cache shards, truth masks."""
    root = tmp_path_factory.mktemp("task3")
    rng = np.random.default_rng(0)
    n = 48
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    labels = [LABELS[i % len(LABELS)] for i in range(n)]
    lesions = [f"HAM_{i // 2:07d}" for i in range(n)]  # two images per lesion
    manifest = pd.DataFrame(
        {"image_id": ids, "label": labels, "lesion_id": lesions, "shard": [i % 2 for i in range(n)]}
    )
    manifest.to_parquet(root / "manifest.parquet")
    lesion_split = {
        les: ["train", "train", "train", "val", "test"][k % 5]
        for k, les in enumerate(dict.fromkeys(lesions))
    }
    split = pd.DataFrame({"image_id": ids, "split": [lesion_split[x] for x in lesions]})
    split.to_parquet(root / "split.parquet")
    (root / "truth").mkdir()
    shards = [{}, {}]
    for i, (image_id, label) in enumerate(zip(ids, labels, strict=True)):
        image = rng.integers(60, 100, (36, 48, 3), dtype=np.uint8)
        mask = np.zeros((36, 48), np.uint8)
        mask[10:26, 16:32] = 1
        if label in ("MEL", "BCC", "AKIEC"):
            image[10:26, 16:32] = 220
        shards[i % 2][f"image__{image_id}"] = image
        Image.fromarray(mask * 255).save(root / "truth" / f"{image_id}_mask.png")
    paths = []
    for k, arrays in enumerate(shards):
        path = root / f"shard-{k:03d}.npz"
        np.savez(path, **arrays)
        paths.append(path)
    return root, paths


def test_cache_resolution_centre_crops_to_size():
    """Check 224 px needs a 299 px long side for 600x450 images (short side 224)."""
    assert effnet_ham.cache_resolution(224) == "max299"
    assert effnet_ham.cache_resolution(300) == "max400"


def test_split_options_merges_variant_over_recipe():
    """Check a variant's overrides win and preprocessing keys are split off."""
    pre, opts = effnet_ham.split_options(
        {"image_size": 224, "focal_alpha": 0.6}, {"focal_alpha": 0.75, "image_size": 300}, seed=5
    )
    assert pre["image_size"] == 300
    assert opts.focal_alpha == 0.75
    assert opts.seed == 5


def test_check_lesions_disjoint_rejects_a_crossing_lesion():
    """Check a lesion in train and test is refused, then a grouped split passes."""
    frame = pd.DataFrame({"lesion_id": ["a", "a", "b"], "split": ["train", "test", "val"]})
    with pytest.raises(ValueError, match="more than one split"):
        effnet_ham.check_lesions_disjoint(frame)
    effnet_ham.check_lesions_disjoint(frame.assign(split=["train", "train", "val"]))


def test_load_task3_labels_and_no_lesion_in_two_splits(task3):
    """Check MEL/BCC/AKIEC are malignant, images are cropped square, lesions stay in one split."""
    root, shards = task3
    frame, images = effnet_ham.load_task3(
        root / "manifest.parquet", root / "split.parquet", shards, image_size=24
    )
    assert len(frame) == 48
    assert frame.groupby("lesion_id")["split"].nunique().max() == 1
    expected = frame["label"].isin(["MEL", "BCC", "AKIEC"]).astype(int)
    assert frame["target"].tolist() == expected.tolist()
    assert images[frame["image_id"][0]].shape == (24, 24, 3)
    with pytest.raises(ValueError, match="do not occur"):
        effnet_ham.load_task3(
            root / "manifest.parquet", root / "split.parquet", shards, malignant_labels=["SCC"]
        )


def test_tiny_end_to_end(task3, tmp_path):
    """Check training, table01, fig01-03, Grad-CAM and fig05/06 run and agree with each other."""
    root, shards = task3
    out = tmp_path / "models" / "baseline2"
    out.mkdir(parents=True)
    common = dict(recipe=RECIPE, malignant_labels=["MEL", "BCC", "AKIEC"])
    info = effnet_ham.train_variant(
        root / "manifest.parquet",
        root / "split.parquet",
        shards,
        variant="baseline2",
        overrides={"mixup_alpha": 0.2},
        checkpoint_dir=tmp_path / "ckpt",
        model_path=out / "model.pt",
        history_path=out / "history.csv",
        predictions_path=out / "predictions.parquet",
        metrics_path=out / "metrics.json",
        run_info=RUN_INFO,
        threads=1,
        **common,
    )
    assert info["epochs_run"] == 2
    assert info["weights"] == "random_init"
    assert json.loads((out / "run_info.json").read_text())["device"] == "cpu"
    preds = pd.read_parquet(out / "predictions.parquet")
    assert set(preds["split"]) == {"val", "test"}
    test = preds[preds["split"] == "test"]
    t = info["test"]
    assert t["tp"] + t["fn"] == int(test["target"].sum())
    assert t["tp"] == int(((test["prediction"] == 1) & (test["target"] == 1)).sum())

    table = effnet_ham.tabulate_results(
        [out / "metrics.json"], ["Baseline 2"], tmp_path / "table01.csv"
    )
    assert table.loc["Baseline 2", "AUROC"] == pytest.approx(t["auroc"])
    assert (tmp_path / "table01.md").exists()

    counts = effnet_ham.plot_class_distribution(
        root / "manifest.parquet", root / "split.parquet", tmp_path / "fig01.png"
    )
    assert counts.to_numpy().sum() == 48
    effnet_ham.plot_loss_curves(out / "history.csv", tmp_path / "fig02.png")
    cm = effnet_ham.plot_confusion(out / "predictions.parquet", tmp_path / "fig03.png")
    assert cm.sum() == len(test)

    cams = effnet_ham.compute_gradcam(
        out / "model.pt",
        out / "predictions.parquet",
        root / "manifest.parquet",
        root / "split.parquet",
        shards,
        tmp_path / "cams.npz",
        tmp_path / "cams.csv",
        overrides=None,
        truth_dir=root / "truth",
        n_examples=2,
        **common,
    )
    assert len(cams) == len(test)
    assert set(cams["region"]) == {"mask"}
    assert cams["outside_fraction"].dropna().between(0, 1).all()
    data = np.load(tmp_path / "cams.npz")
    assert data["maps"].min() >= 0
    assert data["maps"].max() <= 1
    assert data["maps"].shape[1:] == (32, 32)
    effnet_ham.plot_gradcam_examples(
        tmp_path / "cams.npz", tmp_path / "cams.csv", tmp_path / "fig05.png"
    )
    effnet_ham.plot_gradcam_outside(
        tmp_path / "cams.npz", tmp_path / "cams.csv", tmp_path / "fig06.png"
    )
    for fig in ("fig01", "fig02", "fig03", "fig05", "fig06"):
        assert (tmp_path / f"{fig}.png").stat().st_size > 1000
        assert (tmp_path / f"{fig}.pdf").exists()


@pytest.mark.slow
def test_default_run_learns_on_the_synthetic_twin(tmp_path):
    """Check the embedded default run of effnet_ham learns: Baseline 2 test AUROC > 0.7.

    Runs the workflow (synthetic task-3 twin, default config) in a scratch folder. Chance is
    0.5; with ~10 malignant and ~25 benign test images the SD of a chance AUROC is about 0.1,
    so 0.7 is two SDs above chance. Also checks table01 has the five rows and that fig01-fig06
    (except the rule-graph fig04) are drawn.
    """
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    targets = ["results/effnet_ham/tables/table01.csv"] + [
        f"results/effnet_ham/figures/fig0{k}.png" for k in (1, 2, 3, 5, 6)
    ]
    # Targets first: --configfile and --resources take several values.
    cmd = [
        str(Path(sys.executable).with_name("snakemake")),
        *targets,
        "-s",
        str(repo / "Snakefile"),
        "-d",
        str(tmp_path),
        "--cores",
        "2",
        "--resources",
        "gpu=1",
        "--configfile",
        str(repo / "config/config.yaml"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "results/effnet_ham/models/baseline2/metrics.json").read_text())
    assert info["test"]["auroc"] > 0.7
    table = pd.read_csv(tmp_path / "results/effnet_ham/tables/table01.csv")
    assert table["Model"].tolist() == [
        "Baseline 1",
        "Baseline 2",
        "300x300",
        "Mixup 0.2",
        "Shades of grey",
    ]
    for target in targets:
        assert (tmp_path / target).exists()
