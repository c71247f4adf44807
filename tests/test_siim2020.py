"""siim2020: cleaning, datasets, augmentation, metadata, routing, threshold rule, submission."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from melrepro.data.manifests import index_dataset
from melrepro.data.splits import make_split
from melrepro.methods.metadata_models import (
    SITES_2020,
    ExpertResNet,
    MetaResNet,
    ModelSpec,
    encode_metadata,
    metadata_columns,
)
from melrepro.papers.siim2020 import datasets, evaluate, images, names

SEED = 3


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    """A small isic2020 twin with several images per patient, duplicates and missing values."""
    from melrepro.data.synthetic import write_synthetic_archive

    root = tmp_path_factory.mktemp("siim2020") / "isic2020"
    spec = {
        "counts": {"train": {"melanoma": 24, "benign": 120}, "test": {"melanoma": 2, "benign": 10}},
        "min_height": 40,
        "max_height": 48,
        "images_per_patient": 5.0,
        "duplicates": 4,
        "missing_metadata": 0.05,
    }
    write_synthetic_archive("isic2020", root, spec, seed=SEED)
    return root


@pytest.fixture(scope="module")
def manifest(twin) -> pd.DataFrame:
    return index_dataset(twin, "isic2020")


@pytest.fixture(scope="module")
def brightness(manifest) -> pd.DataFrame:
    """Distinct made-up brightness values (the threshold is their melanoma median)."""
    rng = np.random.default_rng(0)
    values = rng.permutation(len(manifest)).astype(float) + 0.5
    return pd.DataFrame({"image_id": manifest["image_id"], "brightness": values})


def _datasets(manifest, brightness, protocol="patient", **kw):
    split = make_split(manifest, "patient_85_15", seed=SEED)
    return datasets.build_datasets(manifest, split, brightness, protocol=protocol, seed=SEED, **kw)


def test_cleaning_counts_match_the_raw_csvs(twin, manifest):
    """Check cleaning removes the duplicates file's second images, then rows with a blank sex,
    age or site, counted independently from the official CSVs."""
    gt = pd.read_csv(twin / "ISIC_2020_Training_GroundTruth_v2.csv")  # blanks -> NaN
    dup = pd.read_csv(twin / "ISIC_2020_Training_Duplicates.csv")
    kept = gt[~gt["image_name"].isin(dup["image_name_2"])]
    cols = ["sex", "age_approx", "anatom_site_general_challenge"]
    expected = kept.dropna(subset=cols)
    clean, test, counts = datasets.clean_training(manifest)
    assert counts["duplicates_removed"] == len(dup) == 4
    assert counts["missing_removed"] == len(kept) - len(expected) > 0
    assert sorted(clean["image_id"]) == sorted(expected["image_name"])
    assert counts["cleaned_melanomas"] == int(expected["target"].sum())
    test_csv = pd.read_csv(twin / "ISIC_2020_Test_Metadata.csv")
    assert len(test) == len(test_csv)  # the test set keeps every row, missing values included
    assert counts["test_rows_with_missing_metadata"] >= 1


def test_patient_protocol_datasets(manifest, brightness):
    """Check patients are disjoint, leakage 0, Small = melanomas + 2 own benign rows per patient,
    and the augmented sets hold (k + 1) x Small rows with copy 0 the originals."""
    rows, counts = _datasets(manifest, brightness)
    clean, _, _ = datasets.clean_training(manifest)
    by_id = clean.set_index("image_id")
    for name in names.DATASETS:
        part = rows[rows["dataset"] == name]
        train_p = set(part.loc[part["role"] == "train", "patient_id"])
        for role in ("val", "eval"):
            assert not train_p & set(part.loc[part["role"] == role, "patient_id"]), (name, role)
        assert counts["datasets"][name]["leakage_rows_removed"] == 0
    all_train = rows[(rows["dataset"] == "all") & (rows["role"] == "train")]
    small = rows[(rows["dataset"] == "small") & (rows["role"] == "train")]
    with_benign = all_train.loc[all_train["target"] == 0, "patient_id"].nunique()
    assert len(small) == int(all_train["target"].sum()) + 2 * with_benign
    assert (small["target"] == 1).sum() == all_train["target"].sum()
    benign = small[small["target"] == 0]
    assert (benign.groupby("patient_id").size() == 2).all()
    assert (by_id.loc[benign["image_id"], "patient_id"].to_numpy() == benign["patient_id"]).all()
    assert (by_id.loc[benign["image_id"], "target"] == 0).all()
    for name, k in (("small3aug", 3), ("small5aug", 5)):
        aug = rows[(rows["dataset"] == name) & (rows["role"] == "train")]
        assert len(aug) == (k + 1) * len(small)
        assert sorted(aug.loc[aug["copy"] == 0, "image_id"]) == sorted(small["image_id"])
        val = rows[(rows["dataset"] == name) & (rows["role"] == "val")]
        assert (val["copy"] == 0).all()
    # one evaluation set for every dataset under the patient split
    evals = [
        set(rows.loc[(rows["dataset"] == n) & (rows["role"] == "eval"), "image_id"])
        for n in names.DATASETS
    ]
    assert all(e == evals[0] for e in evals)


def test_exactly_half_the_training_melanomas_are_below_the_threshold(manifest, brightness):
    """Check the brightness threshold is the training melanomas' median: n // 2 strictly below."""
    rows, counts = _datasets(manifest, brightness)
    mel = rows[(rows["dataset"] == "all") & (rows["role"] == "train") & (rows["target"] == 1)]
    b = brightness.set_index("image_id").loc[mel["image_id"], "brightness"].to_numpy()
    assert counts["brightness_threshold"] == pytest.approx(np.median(b))
    assert counts["melanomas_below_threshold"] == (b < counts["brightness_threshold"]).sum()
    assert counts["melanomas_below_threshold"] == len(b) // 2


def _author_datasets(manifest, brightness):
    return _datasets(
        manifest, brightness, protocol="author_code", author_code={"small_val_patients": 6}
    )


def test_author_code_cuts_a_fifth_of_the_raw_rows_at_a_patient_boundary(manifest, brightness):
    """Check the author's All split: 20 % of the raw rows (before cleaning) from the end of the
    cleaned rows sorted by patient id, the patient at that row kept whole in training."""
    rows, counts = _author_datasets(manifest, brightness)
    clean, _, _ = datasets.clean_training(manifest)
    n_raw = int((manifest["official_split"] == "train").sum())
    assert counts["original_images"] == n_raw > len(clean)  # the twin has rows to clean
    ordered = clean.sort_values("patient_id")["patient_id"].to_numpy()
    last_train_patient = ordered[round(len(clean) - 0.2 * n_raw)]
    expected_val = set(clean.loc[clean["patient_id"] > last_train_patient, "image_id"])
    part = rows[rows["dataset"] == "all"]
    train, val = part[part["role"] == "train"], part[part["role"] == "val"]
    assert set(val["image_id"]) == expected_val
    assert len(train) + len(val) == len(clean)
    assert not set(train["patient_id"]) & set(val["patient_id"])
    assert train["patient_id"].max() == last_train_patient < val["patient_id"].min()
    assert len(val) <= 0.2 * n_raw
    small_val = rows[(rows["dataset"] == "small") & (rows["role"] == "val")]
    assert small_val["patient_id"].nunique() == 6


def test_author_code_evaluates_the_four_datasets_on_one_set(manifest, brightness, tmp_path):
    """Check the author's evaluation set is All validation less every dataset's training rows,
    the same rows for the four datasets; rows removed and the evaluation patients who have
    training images are counted per dataset and shown in table02."""
    import json

    from melrepro.papers.siim2020.tables import tabulate_table02
    from melrepro.report.tables import read_table

    rows, counts = _author_datasets(manifest, brightness)
    all_val = rows[(rows["dataset"] == "all") & (rows["role"] == "val")]
    trained = set(rows.loc[rows["role"] == "train", "image_id"])
    expected = all_val[~all_val["image_id"].isin(trained)]
    evals = [rows[(rows["dataset"] == n) & (rows["role"] == "eval")] for n in names.DATASETS]
    for ev in evals:
        assert list(ev["image_id"]) == list(expected["image_id"])
    assert counts["evaluation"]["eval_images"] == len(expected)
    assert counts["evaluation"]["leakage_rows_removed"] == len(all_val) - len(expected) > 0
    overlap = {}
    for name in names.DATASETS:
        train = rows[(rows["dataset"] == name) & (rows["role"] == "train")]
        c = counts["datasets"][name]
        assert c["leakage_rows_removed"] == all_val["image_id"].isin(set(train["image_id"])).sum()
        shared = expected[expected["patient_id"].isin(set(train["patient_id"]))]
        assert c["overlap_patients"] == shared["patient_id"].nunique()
        assert c["overlap_images"] == len(shared)
        overlap[name] = c["overlap_patients"]
    assert overlap["all"] == 0  # the cut is at a patient boundary
    assert overlap["small"] > 0  # Small is drawn from every cleaned row, then split by patient
    paths = []
    for protocol, c in (("patient", _datasets(manifest, brightness)[1]), ("author_code", counts)):
        paths.append(tmp_path / f"{protocol}.json")
        paths[-1].write_text(json.dumps(c), encoding="utf-8")
    tabulate_table02(paths, tmp_path / "table02.csv")
    table = read_table(tmp_path / "table02.csv", 1)
    assert table.loc["Evaluation set [author code]", "Images"] == len(expected)
    row = "Evaluation patients with Small training images [author code]"
    assert table.loc[row, "Patients"] == overlap["small"]
    assert table.loc["Evaluation patients with Small 3aug training images", "Patients"] == 0


def test_augmented_copies_are_deterministic():
    """Check copy 0 is the source, a copy is identical when made again (each epoch) and differs
    from other copies and other seeds, with shape and dtype kept."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert images.augment_copy(image, seed=1, image_id="ISIC_1", copy=0) is image
    a = images.augment_copy(image, seed=1, image_id="ISIC_1", copy=2)
    b = images.augment_copy(image, seed=1, image_id="ISIC_1", copy=2)
    c = images.augment_copy(image, seed=1, image_id="ISIC_1", copy=3)
    d = images.augment_copy(image, seed=2, image_id="ISIC_1", copy=2)
    assert a.shape == image.shape
    assert a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, d)
    assert not np.array_equal(a, image)
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    images.augment_copy(image, seed=1, image_id="ISIC_1", copy=1)
    assert torch.rand(1) == before  # the global RNG is left alone


def test_metadata_one_hots_in_fixed_order():
    """Check age raw, sex and six sites one-hot in a fixed order; missing/unseen are zeros."""
    frame = pd.DataFrame(
        {
            "age": [45.0, None, 70.0],
            "sex": pd.array(["female", "male", pd.NA], dtype="string"),
            "site": pd.array(["torso", "palms/soles", "ear"], dtype="string"),
        }
    )
    x = encode_metadata(frame)
    assert metadata_columns() == [
        "age_approx",
        "sex_female",
        "sex_male",
        "site_head/neck",
        "site_lower extremity",
        "site_oral/genital",
        "site_palms/soles",
        "site_torso",
        "site_upper extremity",
    ]
    expected = np.array(
        [
            [45, 1, 0, 0, 0, 0, 0, 1, 0],
            [0, 0, 1, 0, 0, 0, 1, 0, 0],
            [70, 0, 0, 0, 0, 0, 0, 0, 0],
        ],
        dtype=np.float32,
    )
    assert np.array_equal(x, expected)
    no_sex = encode_metadata(frame, include_sex=False, route_female=True)
    assert no_sex.shape == (3, 8)
    assert no_sex[:, -1].tolist() == [1.0, 0.0, 0.0]  # the routing flag, last


def test_brightness_router_sends_a_black_image_to_the_dark_expert():
    """Check brightness routing: black -> dark (0), white -> light (1), threshold in 0-255."""
    model = ExpertResNet("brightness", 9, brightness_threshold=100.0).eval()
    x = torch.stack([torch.zeros(3, 32, 32), torch.ones(3, 32, 32), torch.full((3, 32, 32), 0.38)])
    assert model.expert_of(x, torch.zeros(3, 9)).tolist() == [0, 1, 0]  # 0.38 * 255 = 96.9


def test_all_female_batch_leaves_the_male_expert_without_gradient():
    """Check sex routing: an all-female batch trains only the female expert (male grads zero)."""
    torch.manual_seed(0)
    model = ExpertResNet("sex", 7).train()
    x = torch.rand(4, 3, 16, 16)
    meta = torch.cat([torch.rand(4, 7), torch.ones(4, 1)], dim=1)  # flag 1 = female
    model(x, meta).sum().backward()
    female, male = model.backbone
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in female.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in male.parameters())
    # a lone male image in training mode still trains (BatchNorm on one sample)
    model.zero_grad()
    meta[0, -1] = 0.0
    model(x, meta).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in male.parameters())


def test_base_model_shape_and_parameter_count():
    """Check the base model: (B, 1) logits, ~11.25M parameters (ResNet18 + 9-512-128 MLP + head)."""
    model = MetaResNet(9).eval()
    assert model(torch.rand(2, 3, 32, 32), torch.rand(2, 9)).shape == (2, 1)
    n = sum(p.numel() for p in model.parameters())
    assert 11_200_000 < n < 11_300_000
    with pytest.raises(ValueError, match="width 9"):
        model(torch.rand(2, 3, 32, 32), torch.rand(2, 7))


def test_augment_parameters_reach_the_cached_pipeline():
    """Check the pipeline built once per parameter set honours each set: with every probability
    and limit at zero a copy is the image itself, with the defaults it is not, and the default
    copy is the same before and after the other set was used."""
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    off = {
        "flip_p": 0.0,
        "ssr_p": 0.0,
        "brightness_limit": 0.0,
        "contrast_limit": 0.0,
    }
    first = images.augment_copy(image, seed=1, image_id="ISIC_1", copy=1)
    same = images.augment_copy(image, seed=1, image_id="ISIC_1", copy=1, params=off)
    again = images.augment_copy(image, seed=1, image_id="ISIC_1", copy=1)
    assert np.array_equal(same, image)
    assert not np.array_equal(first, image)
    assert np.array_equal(first, again)


def test_model_factory_trains_and_reloads(tmp_path):
    """Check train_model(model_factory=...) trains the metadata model, and load_model with the
    factory restores identical predictions; another factory config does not resume."""
    from melrepro.methods import training

    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    labels = np.array([0, 1] * 6)
    meta = encode_metadata(
        pd.DataFrame({"age": 40 + 20 * labels, "sex": ["male"] * 12, "site": ["torso"] * 12})
    )
    ds = training.ArrayDataset(arrays, labels, metadata=meta)
    options = training.TrainOptions(
        backbone="resnet18",
        loss="bce",
        optimizer="adam",
        lr=1e-3,
        epochs=1,
        batch_size=4,
        sampler_positive_fraction=None,
        accumulation_steps=1,
        amp=False,
        freeze_epochs=0,
        monitor="val_loss",
        device="cpu",
        seed=1,
    )
    spec = ModelSpec("base", 9)
    result = training.train_model(ds, ds, options, checkpoint_dir=tmp_path, model_factory=spec)
    assert isinstance(result.model, MetaResNet)
    p = training.predict(result.model, ds, options=options)
    again = training.load_model(tmp_path / "best.pt", options, model_factory=spec)
    assert np.allclose(training.predict(again, ds, options=options), p)
    other = ModelSpec("base", 9, dropout=0.1)
    resumed = training.train_model(ds, ds, options, checkpoint_dir=tmp_path, model_factory=spec)
    assert resumed.resumed_from_epoch == 1
    fresh = training.train_model(ds, ds, options, checkpoint_dir=tmp_path, model_factory=other)
    assert fresh.resumed_from_epoch == 0


def test_threshold_rule_against_a_hand_computation():
    """Check F1-max with TPR in [0.8, 0.9] on hand-made scores, and the fallback out of band."""
    # 10 positives, 10 negatives. Thresholds at positives' scores give TPR k/10.
    pos = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.1])
    neg = np.array([0.88, 0.75, 0.65, 0.55, 0.45, 0.35, 0.25, 0.2, 0.15, 0.05])
    y = np.r_[np.ones(10), np.zeros(10)].astype(int)
    s = np.r_[pos, neg]
    # t = 0.4: TP 8, FP 5 (0.88 .. 0.45) -> F1 16/23; t = 0.3: TP 9, FP 6 -> F1 18/25 = 0.72
    # (TPR 0.8 and 0.9; the larger F1 wins: 0.72 > 0.6957).
    t, rule = evaluate.choose_threshold(y, s, (0.8, 0.9))
    assert t == pytest.approx(0.3)
    assert rule.startswith("F1-max")
    scores = evaluate.evaluate_at(y, s, t)
    assert scores["f1"] == pytest.approx(18 / 25)
    assert scores["recall"] == pytest.approx(0.9)
    # 3 positives: TPRs 1/3, 2/3, 1 -> none in [0.8, 0.9]; the smallest TPR >= 0.8 is 1.0,
    # reached first at the lowest positive score.
    y3 = np.array([1, 1, 1, 0, 0, 0])
    s3 = np.array([0.9, 0.6, 0.2, 0.7, 0.3, 0.1])
    t3, rule3 = evaluate.choose_threshold(y3, s3, (0.8, 0.9))
    assert t3 == pytest.approx(0.2)
    assert "none in band" in rule3


def test_submission_one_row_per_test_image_in_metadata_order(twin, manifest, tmp_path):
    """Check image_name,target: one row per test image, ids equal to the test metadata's order."""
    test = manifest[manifest["official_split"] == "test"]
    preds = pd.DataFrame(
        {
            "image_id": test["image_id"].iloc[::-1].to_numpy(),
            "role": "test",
            "probability": np.linspace(0, 1, len(test)),
        }
    )
    path = tmp_path / "p.parquet"
    preds.to_parquet(path)
    out = tmp_path / "submission.csv"
    evaluate.write_submission(path, twin / "ISIC_2020_Test_Metadata.csv", out)
    sub = pd.read_csv(out)
    meta = pd.read_csv(twin / "ISIC_2020_Test_Metadata.csv")
    assert list(sub.columns) == ["image_name", "target"]
    assert list(sub["image_name"]) == list(meta["image"])
    assert dict(zip(sub["image_name"], sub["target"], strict=True)) == pytest.approx(
        dict(zip(preds["image_id"], preds["probability"], strict=True))
    )
    preds.iloc[1:].to_parquet(path)
    with pytest.raises(ValueError, match="without prediction"):
        evaluate.write_submission(path, twin / "ISIC_2020_Test_Metadata.csv", out)


def test_jpeg_round_trip_keeps_brightness():
    """Check the q60 round trip changes pixels but keeps the brightness within 2 levels."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(120, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
    out = images.jpeg_round_trip(image, 60)
    assert out.shape == image.shape
    assert not np.array_equal(out, image)
    assert abs(float(out.mean()) - float(image.mean())) < 2
    assert SITES_2020[0] == "head/neck"


def test_the_package_imports_without_torch():
    """Check every siim2020 module imports without torch (table and figure jobs start without
    it; torch is imported inside the functions that need it)."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from melrepro.papers.siim2020 import datasets, evaluate, figures, images, names, tables"
        ", train\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    src = str(Path(datasets.__file__).parents[3])  # this checkout's sources, not an installed copy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_label_shuffled_control_permutes_training_labels_only():
    """Check the control's labels: a seeded permutation (same counts, same result for the same
    seed, a different one for another seed), not the identity, refused for one class."""
    from melrepro.methods.controls import shuffled_labels

    labels = np.r_[np.ones(20, int), np.zeros(180, int)]
    shuffled = shuffled_labels(labels, SEED)
    assert sorted(shuffled) == sorted(labels)
    assert (shuffled != labels).any()
    assert (shuffled_labels(labels, SEED) == shuffled).all()
    assert (shuffled_labels(labels, SEED + 1) != shuffled).any()
    # about the prevalence of melanomas among the true melanomas' slots: no link left
    assert shuffled[:20].sum() < 10
    with pytest.raises(ValueError, match="two distinct"):
        shuffled_labels(np.zeros(5, int), SEED)
    assert names.row_label(names.CONTROL_MODEL, "all") == "Base All (label-shuffled control)"


def test_label_prior_row_against_a_hand_computation():
    """Check the label prior on 50 images with 5 melanomas: ROC-AUC 0.5, recall 1, precision
    0.1, F1 2 x 0.1 / 1.1."""
    from melrepro.papers.siim2020.baselines import LABEL_PRIOR, label_prior_row

    row = label_prior_row({"n_eval": 50, "n_eval_melanomas": 5, "protocol": "author_code"})
    assert row["auroc"] == 0.5
    assert row["recall"] == 1.0
    assert row["f1"] == pytest.approx(2 * 0.1 / 1.1)
    assert row["label"] == f"{LABEL_PRIOR} [author code]"


def test_metadata_logistic_row_finds_a_colour_signal(manifest, brightness, tmp_path):
    """Check the reference logistic regression on age, sex and mean colour: near-perfect when the
    mean red separates melanomas, near chance when the colour is noise and age and sex are
    constant; it is fitted on All's training rows and scored on the evaluation rows."""
    from melrepro.papers.siim2020.baselines import metadata_logistic_row

    rows, _ = _datasets(manifest, brightness)
    rows_path = tmp_path / "rows.parquet"
    rows.to_parquet(rows_path)
    rng = np.random.default_rng(0)
    target = manifest["target"].fillna(0).to_numpy(float)
    results = {}
    for name, red, meta in (
        ("signal", 100 + 40 * target + rng.normal(0, 5, len(manifest)), manifest),
        ("noise", rng.normal(100, 5, len(manifest)), manifest.assign(age=50, sex="male")),
    ):
        colour = pd.DataFrame({"image_id": manifest["image_id"], "mean_r": red, "mean_g": 90.0})
        colour_path = tmp_path / f"colour-{name}.parquet"
        colour.assign(mean_b=80.0).to_parquet(colour_path)
        meta.to_parquet(tmp_path / f"manifest-{name}.parquet")
        results[name] = metadata_logistic_row(
            tmp_path / f"manifest-{name}.parquet", rows_path, [colour_path], tpr_range=(0.8, 0.9)
        )
    ev = rows[(rows["dataset"] == "all") & (rows["role"] == "eval")]
    assert results["signal"]["n_eval"] == len(ev)
    assert results["signal"]["n_eval_melanomas"] == ev["target"].sum()
    assert results["signal"]["auroc"] > 0.95
    assert abs(results["noise"]["auroc"] - 0.5) < 0.3
