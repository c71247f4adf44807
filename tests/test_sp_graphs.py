"""Tests of melrepro.papers.sp_graphs: per-image feature blocks, feature sets, and a tmp_path round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from melrepro.methods.conventional_features import N_CONVENTIONAL, conventional_features
from melrepro.papers.sp_graphs.evaluate import CONTROL, cross_validate_table, table_feature_sets
from melrepro.papers.sp_graphs.features import (
    ExtractionSettings,
    extract_features_shard,
    image_features,
    lesion_box,
    load_features,
)
from melrepro.papers.sp_graphs.figures import plot_examples, plot_results
from melrepro.papers.sp_graphs.tables import CONTROL_ROW, PRIOR_ROW, write_tables
from melrepro.papers.sp_graphs.variants import TABLES, variant_key
from melrepro.report.scorecard import lookup

PAPER_VALUES = Path(__file__).parents[1] / "config" / "paper_values" / "sp_graphs.csv"
SMALL = ExtractionSettings(seg_levels=(20, 40), shg_levels=(5, 10, 20), prune_taus=(0.5,),
                           conventional_size=96)  # fmt: skip


def _lesion(rng: np.random.Generator, melanoma: bool, size: int = 96) -> np.ndarray:
    """A toy dermoscopic image: skin, and a round uniform brown nevus or an irregular
    multi-coloured (brown, black, blue-grey) melanoma."""
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    r, theta = np.hypot(yy, xx), np.arctan2(yy, xx)
    skin = np.array([225, 185, 165]) + rng.normal(0, 4, 3)
    img = np.broadcast_to(skin, (size, size, 3)).copy()
    if melanoma:
        bumps = sum(rng.uniform(0.03, 0.08) * np.cos(k * theta + rng.uniform(0, 6))
                    for k in (3, 5, 7))  # fmt: skip
        inside = r < 0.3 + bumps
        img[inside] = (110, 60, 40)
        for colour in ((30, 20, 20), (90, 100, 130), (150, 90, 60)):
            cy, cx = rng.uniform(-0.15, 0.15, 2)
            blob = (np.hypot(yy - cy, xx - cx) < rng.uniform(0.06, 0.12)) & inside
            img[blob] = colour
    else:
        img[r < rng.uniform(0.18, 0.26)] = (160, 115, 80) + rng.normal(0, 4, 3)
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory) -> tuple[Path, Path]:
    """A cache shard and manifest of 24 melanomas and 24 benign toy lesions (plus 2 val rows)."""
    root = tmp_path_factory.mktemp("sp")
    rng = np.random.default_rng(0)
    arrays, rows = {}, []
    for i in range(50):
        melanoma = i % 2 == 0
        image_id = f"ISIC_{i:07d}"
        arrays[f"image__{image_id}"] = _lesion(rng, melanoma)
        rows.append({"image_id": image_id, "dataset": "isic2017",
                     "official_split": "val" if i >= 48 else "train",
                     "label": "melanoma" if melanoma else "nevus", "target": int(melanoma)})  # fmt: skip
    shard = root / "shard-000.npz"
    np.savez(shard, **arrays)
    manifest = root / "manifest.parquet"
    pd.DataFrame(rows).astype({"target": "Int8"}).to_parquet(manifest)
    return shard, manifest


def test_image_features_blocks_and_sizes():
    """Check every (graph, weighting, signal, tau, level) block exists with 7n + 9 values."""
    img = _lesion(np.random.default_rng(1), True)
    blocks = image_features(img, SMALL)
    assert blocks["conventional"].shape == (N_CONVENTIONAL,)
    expected = {"conventional"}
    for n in SMALL.seg_levels:
        for sig in ("geometric", "texture", "color"):
            for w in ("gaussian", "learned"):
                expected.add(variant_key("seg", w, sig, 0.0, n))
        expected.add(variant_key("seg", "learned", "color", 0.5, n))
    for n in SMALL.shg_levels:
        for sig in ("geometric", "texture", "color"):
            expected.add(variant_key("shg", "learned", sig, 0.0, n))
    assert set(blocks) == expected
    for key, vec in blocks.items():
        if key != "conventional":
            n = int(key.rsplit("-n", 1)[1])
            assert vec.shape == (7 * n + 9,), key
        assert np.isfinite(vec).all(), key
    # the SHG's finest level is the SEG map of that size: identical features
    np.testing.assert_array_equal(blocks["shg-learned-texture-tau0-n20"],
                                  blocks["seg-learned-texture-tau0-n20"])  # fmt: skip
    # pruning half of the weighted edges halves the density (4th global feature) of the
    # sparse learned graph: ceil(r₊ / 2) of its r₊ edges stay
    n = 40
    pairs = n * (n - 1) / 2
    full = blocks[variant_key("seg", "learned", "color", 0.0, n)][6 * n + 3]
    dens = blocks[variant_key("seg", "learned", "color", 0.5, n)][6 * n + 3]
    assert 0.02 < full < 0.5  # learned graphs are sparse
    r_plus = round(full * pairs)
    assert dens * pairs == pytest.approx(r_plus - np.floor(0.5 * r_plus))


def test_conventional_features_are_394_finite_and_colour_sensitive():
    """Check the conventional vector's size, and that a darker lesion lowers its mean value."""
    rng = np.random.default_rng(2)
    a = conventional_features(_lesion(rng, False))
    img = _lesion(rng, False)
    b = conventional_features((img * 0.5).astype(np.uint8))
    assert a.shape == b.shape == (N_CONVENTIONAL,)
    assert np.isfinite(a).all()
    assert b[0] < a[0]  # lesion mean R


def test_table_feature_sets_widths():
    """Check single levels = conventional + one level, fused = conventional + all levels."""
    blocks = {"conventional": np.zeros((3, N_CONVENTIONAL))}
    for n in (20, 40):
        blocks[variant_key("seg", "gaussian", "color", 0.0, n)] = np.zeros((3, 7 * n + 9))
    sets = table_feature_sets("table03", blocks, seg_levels=(20, 40), shg_levels=(), prune_taus=())
    assert list(sets) == ["n=20", "n=40", "fused"]
    assert sets["n=20"][0].shape[1] == N_CONVENTIONAL + 149
    assert sets["fused"][0].shape[1] == N_CONVENTIONAL + 149 + 289
    assert len(sets["fused"][1]) == sets["fused"][0].shape[1]


def test_round_trip_features_cv_tables_figures(toy_dataset, tmp_path):
    """Check the path-level functions end to end on toy lesions, and that the fused colour
    classifier separates melanoma clearly (mean AUC >= 85 % over 5 folds, SVM and RF)."""
    shard, manifest = toy_dataset
    feats = tmp_path / "features.npz"
    extract_features_shard(shard, manifest, feats, settings=SMALL, splits=["train"], threads=1)
    samples, blocks = load_features([feats], [manifest])
    assert len(samples) == 48  # the 2 val images are not used
    assert samples["target"].sum() == 24
    twice, twice_blocks = load_features([feats, feats], [manifest])  # one image in two datasets
    assert len(twice) == 48
    assert twice_blocks["conventional"].shape[0] == 48

    kw = {"seg_levels": SMALL.seg_levels, "shg_levels": SMALL.shg_levels,
          "prune_taus": SMALL.prune_taus, "n_splits": 5, "classifiers": ("SVM", "RF"),
          "classifier_settings": {"n_select": 40, "n_estimators": 20}}  # fmt: skip
    metrics, selection = {}, {}
    for table in [*TABLES, "table07", CONTROL]:
        metrics[table] = tmp_path / f"{table}_m.parquet"
        selection[table] = tmp_path / f"{table}_s.parquet"
        protocol = "before_cv" if table == "table07" else "within_fold"
        cross_validate_table([feats], [manifest], metrics[table], selection[table], table=table,
                             protocol=protocol, **kw)  # fmt: skip

    m = pd.read_parquet(metrics["table06"])
    fused_auc = m[m["feature_set"] == "fused"].groupby("classifier")["AUC"].mean()
    assert (fused_auc >= 85).all(), fused_auc

    outputs = {f"table{i:02d}": tmp_path / "tables" / f"table{i:02d}.csv" for i in range(1, 13)}
    write_tables(metrics, PAPER_VALUES, outputs, main_protocol="within_fold")
    t1 = pd.read_csv(outputs["table01"])
    assert list(t1.columns)[:5] == ["Graph level", "Metric", "SVM", "RF", "Edge density (%)"]
    # each CV mean carries its 95 % interval over folds, around it
    assert list(t1.columns)[5:] == ["SVM CI low", "SVM CI high", "RF CI low", "RF CI high"]
    assert (t1["SVM CI low"] <= t1["SVM"] + 0.01).all()
    assert (t1["SVM"] <= t1["SVM CI high"] + 0.01).all()
    assert t1[["RF CI low", "RF CI high"]].notna().all().all()  # one value per fold found
    # the learned graphs' sparsity is recorded: complete Gaussian graphs, sparse learned ones
    np.testing.assert_allclose(t1["Edge density (%)"], 100.0)
    t4 = pd.read_csv(outputs["table04"])
    assert ((t4["Edge density (%)"] > 1) & (t4["Edge density (%)"] < 50)).all()
    assert t1["Graph level"].unique().tolist() == ["n=20", "n=40", "fused"]
    # the scorecard finds our rows under the paper's keys
    assert lookup(t1, "fused / AUC", "SVM") is not None
    t7 = pd.read_csv(outputs["table07"])
    assert lookup(t7, "Learned / AC", "Color") is not None
    assert lookup(t7, "Learned / AC", "Color [before_cv]") is not None
    # the marked rows: the control learns nothing the test folds confirm; the prior is 50 % AUC
    assert lookup(t7, f"{CONTROL_ROW}, learned / AUC", "Color") < 75
    assert lookup(t7, "Learned / AUC", "Color") > 85
    assert lookup(t7, f"{PRIOR_ROW} / AUC", "Color") == 50
    assert 40 <= lookup(t7, f"{PRIOR_ROW} / AC", "Color [before_cv]") <= 60  # 24 of 48 melanomas
    t11 = pd.read_csv(outputs["table11"])
    assert t11["Pruning threshold"].unique().tolist() == ["tau=0%", "tau=50%"]
    # pruning removes half of the edges that carry weight, not zeros: density halves
    dens = t11.groupby("Pruning threshold", sort=False)["Edge density (%)"].first()
    assert dens["tau=50%"] == pytest.approx(dens["tau=0%"] / 2, rel=0.15)
    t12 = pd.read_csv(outputs["table12"])
    assert t12["Author"].iloc[-1] == "Proposed Approach"
    assert len(t12) == 11
    assert t12["Features"].notna().all()
    chatterjee = t12.set_index("Author").loc["Chatterjee et al. [48]"]
    assert float(chatterjee["AUC"]) == pytest.approx(0.9852)  # section 7.5: an AUC

    plot_results(metrics, selection, tmp_path / "fig05.png", tmp_path / "fig06.png")
    plot_examples([shard], manifest, *(tmp_path / f"fig0{i}.png" for i in (1, 2, 3)),
                  settings={"seg_levels": [20, 40], "shg_levels": [5, 10, 20]})  # fmt: skip
    for i in (1, 2, 3, 5, 6):
        assert (tmp_path / f"fig0{i}.png").stat().st_size > 1000
        assert (tmp_path / f"fig0{i}.pdf").exists()


def test_conventional_colour_statistics_match_scipy():
    """Check mean, std, skewness, kurtosis and percentiles against numpy/scipy.stats."""
    from scipy import stats

    from melrepro.methods.conventional_features import _channel_stats

    v = np.random.default_rng(4).gamma(2.0, size=(5000, 3))
    got = _channel_stats(v).reshape(3, 7)
    np.testing.assert_allclose(got[:, 0], v.mean(axis=0))
    np.testing.assert_allclose(got[:, 1], v.std(axis=0))
    np.testing.assert_allclose(got[:, 2], stats.skew(v, axis=0))
    np.testing.assert_allclose(got[:, 3], stats.kurtosis(v, axis=0))
    np.testing.assert_allclose(got[:, 4:], np.percentile(v, [10, 50, 90], axis=0).T)


def test_lesion_box_contains_the_lesion_and_has_a_minimum_size():
    """Check the crop holds the painted lesion with a margin, and a speck gives a usable box."""
    img = np.full((100, 120, 3), 220, dtype=np.uint8)
    img[40:60, 50:80] = 60  # the lesion
    rows, cols = lesion_box(img, margin=0.1)
    # rows 40-59 + 2 px margin = 24 < 32 (minimum) -> centred 32 rows; cols 50-79 + 3 px
    assert (rows.start, rows.stop, cols.start, cols.stop) == (34, 66, 47, 83)
    img = np.full((100, 120, 3), 220, dtype=np.uint8)
    img[50, 60] = 0  # one dark pixel
    rows, cols = lesion_box(img, margin=0.1)
    assert rows.stop - rows.start == 32
    assert cols.stop - cols.start == 32
    assert rows.start <= 50 < rows.stop
    assert cols.start <= 60 < cols.stop


def test_label_shuffled_cv_permutes_training_labels_only():
    """The control: on features that give the label away, CV on true labels is perfect, on
    permuted training labels near chance (test folds keep their labels), seeded, and refused
    with before_cv; the label prior predicts each training fold's majority class."""
    from melrepro.methods.classical import cross_validate, label_prior_metrics

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], [36, 24])
    x = np.column_stack([y + rng.normal(0, 0.1, len(y)), rng.normal(size=(len(y), 3))])
    sets = {"leaky": (x, ["label", "a", "b", "c"])}
    kw = {"classifiers": ("SVM", "KNN"), "n_splits": 5, "seed": 1,
          "settings": None}  # fmt: skip
    true = cross_validate(sets, y, **kw).summary()
    shuffled = cross_validate(sets, y, shuffle_training_labels=True, **kw).summary()
    again = cross_validate(sets, y, shuffle_training_labels=True, **kw).summary()
    assert (true["AUC"] == 100).all()
    assert (shuffled["AUC"] < 75).all()
    pd.testing.assert_frame_equal(shuffled, again)
    with pytest.raises(ValueError, match="within_fold"):
        cross_validate(sets, y, protocol="before_cv", shuffle_training_labels=True, **kw)
    prior = label_prior_metrics(y, n_splits=5, seed=1)
    assert len(prior) == 5
    assert (prior["AUC"] == 50).all()
    assert prior["AC"].mean() == pytest.approx(60)  # 36 of 60 benign, folds of 12 images
    assert (prior["Spec"] == 100).all()
    assert (prior["Sens"] == 0).all()
