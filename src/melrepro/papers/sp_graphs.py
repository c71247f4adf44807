"""The sp_graphs paper end to end: per-image features, cross-validation, tables and figures.

Elwer, Rushdi & Annaby, "Learning superpixel ensemble and hierarchy graphs for melanoma
detection", arXiv:2604.03710 (2026). The path-level functions here are what the workflow's
scripts call; the methods live in :mod:`melrepro.methods.superpixels`, :mod:`melrepro.methods.graph_weights`,
:mod:`melrepro.methods.graph_features`, :mod:`melrepro.methods.conventional_features` and
:mod:`melrepro.methods.classical`.

Feature variants are named ``<graph>-<weighting>-<signal>-tau<percent>-n<nodes>``, e.g.
``seg-learned-color-tau50-n60``; ``conventional`` holds the 394 image features.

Artifact index (id: function that writes it):

    table01-table12  write_tables (from the per-table metrics of cross_validate_table)
    fig01-fig03      plot_examples
    fig04            the rule graph: melrepro.report.rulegraph via workflow/rules/report.smk
    fig05, fig06     plot_results
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melrepro.methods.classical import CLASSIFIERS, METRICS, ClassifierSettings, cross_validate
from melrepro.methods.conventional_features import (
    conventional_feature_names,
    conventional_features,
    otsu_lesion,
)
from melrepro.methods.graph_features import feature_names, graph_features, local_efficiency
from melrepro.methods.graph_weights import (
    gaussian_weights,
    learn_weights_mm,
    prune_weakest,
    standardize_signals,
)
from melrepro.methods.superpixels import (
    SIGNAL_NAMES,
    node_signals,
    pixel_maps,
    region_sums,
    superpixel_ensemble,
)
from melrepro.methods.superpixels import superpixel_hierarchy as _hierarchy

logger = logging.getLogger(__name__)

__all__ = [
    "ExtractionSettings",
    "SIGNALS",
    "TABLES",
    "cross_validate_table",
    "edge_density",
    "extract_features_shard",
    "image_features",
    "lesion_box",
    "load_features",
    "plot_examples",
    "plot_results",
    "table_feature_sets",
    "variant_key",
    "write_tables",
]

SIGNALS = ("geometric", "texture", "color")
_SIGNAL_TITLE = {"geometric": "Geometric", "texture": "Texture", "color": "Color"}
_WEIGHTING_TITLE = {"gaussian": "Handcrafted", "learned": "Learned"}

#: Which graph, weighting and signal each results table holds (ARTIFACTS.md, sp_graphs).
TABLES: dict[str, tuple[str, str, str]] = {
    "table01": ("seg", "gaussian", "geometric"),
    "table02": ("seg", "gaussian", "texture"),
    "table03": ("seg", "gaussian", "color"),
    "table04": ("seg", "learned", "geometric"),
    "table05": ("seg", "learned", "texture"),
    "table06": ("seg", "learned", "color"),
    "table08": ("shg", "learned", "geometric"),
    "table09": ("shg", "learned", "texture"),
    "table10": ("shg", "learned", "color"),
    "table11": ("seg", "learned", "color"),  # fused, pruned at every tau
}


#: Column of tables 1-11 holding the mean edge density (%) of the graphs behind each row.
EDGE_DENSITY = "Edge density (%)"


def variant_key(graph: str, weighting: str, signal: str, tau: float, n: int) -> str:
    """Name of one feature block, e.g. ``seg-learned-color-tau25-n40``."""
    return f"{graph}-{weighting}-{signal}-tau{round(100 * tau)}-n{n}"


@dataclass(frozen=True)
class ExtractionSettings:
    """Every constant of the per-image feature extraction (paper values as defaults).

    Attributes
    ----------
    seg_levels : tuple of int
        SEG superpixel counts (paper §6.1: 20, 40, 60, 80, 100).
    shg_levels : tuple of int
        SHG superpixel counts (paper tables 8–10: 5, 10, 20, 40, 80).
    seg_weightings, shg_weightings : tuple of str
        Edge weightings computed for each graph family (tables 1–6: both; 8–10: learned).
    prune_taus : tuple of float
        Pruning fractions (table 11: 0.25, 0.5, 0.75), applied to ``prune_variant``.
    prune_variant : tuple of str
        ``(graph, weighting, signal)`` the pruning study uses (table 11: SEG, learned, colour).
    compactness, sigma, slic_oversample : float
        SLIC settings (scikit-image defaults) and the over-segmentation factor before merging to
        exactly n regions (see :mod:`melrepro.methods.superpixels`).
    mm_delta, mm_gamma, mm_tol, mm_max_iter : float, int
        δ, γ, ε of Algorithm 1 and an iteration cap.
    mm_support_cut : float
        Learned weights below this fraction of the graph's largest weight are set to 0 (after
        the projected-Newton refinement; see :func:`melrepro.methods.graph_weights.learn_weights_mm`).
    gft_signal : mapping
        Node signal column whose graph Fourier transform is taken, per signal type.
    conventional_size : int
        Longest side for the conventional features.
    crop_to_lesion : bool
        Superpixels cover the lesion's bounding box (Otsu lesion mask, see
        :func:`melrepro.methods.conventional_features.otsu_lesion`, grown by ``crop_margin`` of its size
        on every side) rather than the whole image: the paper subdivides "each lesion" into
        superpixels. The ISIC masks are not used because the archive melanomas have none.
    crop_margin : float
        Margin added around the lesion box, as a fraction of its height and width.
    """

    seg_levels: tuple[int, ...] = (20, 40, 60, 80, 100)
    shg_levels: tuple[int, ...] = (5, 10, 20, 40, 80)
    seg_weightings: tuple[str, ...] = ("gaussian", "learned")
    shg_weightings: tuple[str, ...] = ("learned",)
    prune_taus: tuple[float, ...] = (0.25, 0.5, 0.75)
    prune_variant: tuple[str, str, str] = ("seg", "learned", "color")
    compactness: float = 10.0
    sigma: float = 0.0
    slic_oversample: float = 2.0
    # DEVIATION: the paper gives no δ, γ, ε; 1, 1, 1e-6 are ours
    mm_delta: float = 1.0
    mm_gamma: float = 1.0
    mm_tol: float = 1e-6
    mm_max_iter: int = 10000
    # DEVIATION: the support cut is ours (the paper's MM iterate never has an exact zero)
    mm_support_cut: float = 1e-6
    # DEVIATION: the paper does not say which signal column its GFT transforms
    gft_signal: Mapping[str, str] = field(
        default_factory=lambda: {
            "geometric": "area",
            "texture": "local_std_mean",
            "color": "L_mean",
        }
    )
    conventional_size: int = 256
    # DEVIATION: the lesion crop (Otsu box) is ours; the paper only says "each lesion" is subdivided
    crop_to_lesion: bool = True
    crop_margin: float = 0.1

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ExtractionSettings:
        """Build from the ``sp_graphs.features`` config section (lists become tuples)."""
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
        return cls(**kw)


def lesion_box(image: np.ndarray, *, margin: float = 0.1) -> tuple[slice, slice]:
    """Bounding box of the Otsu lesion mask, grown by ``margin`` × its size on every side.

    Parameters
    ----------
    image : (H, W, 3) uint8 ndarray
    margin : float
        Fraction of the box height/width added above, below, left and right (clipped to the
        image). A box side is never shorter than a quarter of the image side (or 32 pixels).

    Returns
    -------
    tuple of slice
        ``(rows, cols)`` to index the image with.
    """
    from skimage.color import rgb2gray

    mask = otsu_lesion(rgb2gray(image))
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    h, w = mask.shape

    def span(lo: int, hi: int, size: int) -> slice:
        pad = int(round(margin * (hi - lo + 1)))
        lo, hi = max(lo - pad, 0), min(hi + pad + 1, size)
        need = max(size // 4, min(32, size))  # a speck of dark hair must not become "the lesion"
        if hi - lo < need:
            lo = min(max((lo + hi) // 2 - need // 2, 0), size - need)
            hi = lo + need
        return slice(lo, hi)

    return span(int(rows[0]), int(rows[-1]), h), span(int(cols[0]), int(cols[-1]), w)


def _weights(x: np.ndarray, weighting: str, s: ExtractionSettings) -> np.ndarray:
    # DEVIATION: signals are z-scored per graph before Eq. 1 (the paper does not scale them)
    xs = standardize_signals(x)
    if weighting == "gaussian":
        return gaussian_weights(xs)
    if weighting == "learned":
        return learn_weights_mm(
            xs, delta=s.mm_delta, gamma=s.mm_gamma, tol=s.mm_tol, max_iter=s.mm_max_iter,
            support_cut=s.mm_support_cut,
        ).weights  # fmt: skip
    raise ValueError(f"unknown weighting {weighting!r}; choose gaussian or learned")


def image_features(
    image: np.ndarray, settings: ExtractionSettings | None = None
) -> dict[str, np.ndarray]:
    """All feature blocks of one image.

    Parameters
    ----------
    image : (H, W, 3) uint8 ndarray
        RGB image at the working resolution.
    settings : ExtractionSettings, optional

    Returns
    -------
    dict
        ``{variant_key: (7n + 9,) features}`` for every SEG/SHG level, signal, weighting and
        pruning fraction, plus ``"conventional"`` (394,).
    """
    s = settings or ExtractionSettings()
    conventional = conventional_features(image, analysis_size=s.conventional_size)
    if s.crop_to_lesion:
        image = image[lesion_box(image, margin=s.crop_margin)]
    maps = pixel_maps(image)
    seg = superpixel_ensemble(
        image, tuple(s.seg_levels), lab=maps.slic_lab, compactness=s.compactness, sigma=s.sigma,
        oversample=s.slic_oversample,
    )  # fmt: skip
    finest = max(s.shg_levels)
    shg = _hierarchy(
        image, tuple(s.shg_levels), lab=maps.slic_lab, finest=seg.get(finest), compactness=s.compactness,
        sigma=s.sigma, oversample=s.slic_oversample,
    )  # fmt: skip
    out: dict[str, np.ndarray] = {"conventional": conventional}
    cache: dict[tuple[int, str, str, float], np.ndarray] = {}
    # SHG levels are unions of finer regions: their pixel sums are added up from the finest map
    # (the SEG map of that size) through the parent links instead of recounting every pixel
    sums = {("seg", n): region_sums(maps, labels) for n, labels in seg.items()}
    shg_levels = sorted(shg.labels, reverse=True)
    fine_sums = sums.get(("seg", finest)) or region_sums(maps, shg.labels[finest])
    sums[("shg", finest)] = fine_sums
    for fine, coarse in zip(shg_levels[:-1], shg_levels[1:], strict=True):
        sums[("shg", coarse)] = sums[("shg", fine)].coarsen(shg.parents[fine])
    families = (("seg", seg, s.seg_weightings), ("shg", shg.labels, s.shg_weightings))
    for graph, level_maps, weightings in families:
        for n, labels in sorted(level_maps.items()):
            signals = node_signals(maps, labels, sums=sums[(graph, n)])
            for signal in SIGNALS:
                x = signals[signal]
                gft = x[:, SIGNAL_NAMES[signal].index(s.gft_signal[signal])]
                for weighting in weightings:
                    taus = [0.0]
                    if (graph, weighting, signal) == tuple(s.prune_variant):
                        taus += list(s.prune_taus)
                    # the SHG's finest map is the SEG map of the same size: share its features
                    map_id = (
                        id(seg[n]) if graph == "shg" and n in seg and n == finest else id(labels)
                    )
                    w_full = None
                    for tau in taus:
                        ck = (map_id, signal, weighting, tau)
                        if ck not in cache:
                            if w_full is None:
                                w_full = _weights(x, weighting, s)
                            w = prune_weakest(w_full, tau) if tau else w_full
                            cache[ck] = graph_features(w, gft, le=local_efficiency(w))
                        out[variant_key(graph, weighting, signal, tau, n)] = cache[ck]
    return out


def _worker_init() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _one(image_id: str, image: np.ndarray, settings: ExtractionSettings) -> tuple[str, dict]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return image_id, image_features(image, settings)


def extract_features_shard(
    shard: str | Path,
    manifest: str | Path,
    output: str | Path,
    *,
    settings: Mapping[str, Any] | ExtractionSettings | None = None,
    splits: Sequence[str] | None = None,
    max_images: int | None = None,
    threads: int = 1,
) -> Path:
    """Extract every feature block of the images of one cache shard and save them.

    Parameters
    ----------
    shard : path
        Image-cache shard (``results/data/<dataset>/cache/<res>/shard-<k>.npz``).
    manifest : path
        The dataset's manifest; only its rows with ``official_split`` in ``splits`` and a known
        ``target`` are used.
    output : path
        ``.npz`` with ``image_ids`` and one (N, F) array per variant key.
    settings : mapping or ExtractionSettings, optional
    splits : sequence of str, optional
        Official splits to keep (sp_graphs: train and test of ISIC 2017 = 2600 images); all if
        ``None``.
    max_images : int, optional
        Keep at most this many images of the shard (first in id order); for quick runs.
    threads : int
        Worker processes (images are independent).

    Returns
    -------
    pathlib.Path
    """
    from joblib import Parallel, delayed

    from melrepro.data.imagecache import load_shard

    s = settings if isinstance(settings, ExtractionSettings) else ExtractionSettings.from_config(
        settings or {})  # fmt: skip
    man = pd.read_parquet(manifest)
    man = man[man["target"].notna()]
    if splits is not None:
        man = man[man["official_split"].isin(list(splits))]
    wanted = set(man["image_id"])
    images = {k: v.image for k, v in load_shard(shard).items() if k in wanted}
    ids = sorted(images)
    if max_images is not None:
        ids = ids[:max_images]
    logger.info("shard %s: %d images to process with %d worker(s)", shard, len(ids), threads)
    if threads > 1 and len(ids) > 1:
        results = Parallel(n_jobs=threads)(delayed(_one)(i, images[i], s) for i in ids)
    else:
        results = [_one(i, images[i], s) for i in ids]
    keys = sorted(results[0][1]) if results else []
    arrays = {k: np.stack([r[1][k] for r in results]) for k in keys}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.stem + ".tmp.npz")
    np.savez_compressed(tmp, image_ids=np.array(ids, dtype=str), **arrays)
    tmp.replace(output)
    logger.info("wrote %s (%d images, %d blocks)", output, len(ids), len(keys))
    return output


def load_features(
    feature_files: Iterable[str | Path], manifests: Iterable[str | Path]
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Concatenate feature shards and attach labels from the manifests.

    Images listed twice (an archive melanoma that is also in ISIC 2017) are kept once, from the
    first file that holds them.

    Returns
    -------
    samples : pandas.DataFrame
        ``image_id``, ``dataset``, ``target`` (int) in the row order of the arrays.
    blocks : dict
        ``{variant_key: (N, F) ndarray}``.
    """
    man = pd.concat([pd.read_parquet(m) for m in manifests], ignore_index=True)
    man = man.drop_duplicates("image_id").set_index("image_id")
    ids: list[str] = []
    parts: dict[str, list[np.ndarray]] = {}
    for path in feature_files:
        with np.load(path) as data:
            if data["image_ids"].size == 0:
                continue
            ids.extend(data["image_ids"].tolist())
            for k in data.files:
                if k != "image_ids":
                    parts.setdefault(k, []).append(data[k])
    blocks = {k: np.concatenate(v) for k, v in parts.items()}
    # an archive melanoma that is also an ISIC 2017 image must be counted once
    keep = ~pd.Index(ids).duplicated(keep="first")
    if not keep.all():
        logger.warning("dropped %d images present in more than one dataset", int((~keep).sum()))
        ids = [i for i, k in zip(ids, keep, strict=True) if k]
        blocks = {k: v[keep] for k, v in blocks.items()}
    samples = pd.DataFrame({"image_id": ids})
    samples["dataset"] = man.loc[ids, "dataset"].to_numpy()
    samples["target"] = man.loc[ids, "target"].astype(int).to_numpy()
    return samples, blocks


def _level_label(n: int | str) -> str:
    return "fused" if n == "fused" else f"n={n}"


def table_feature_sets(
    table: str,
    blocks: Mapping[str, np.ndarray],
    *,
    seg_levels: Sequence[int],
    shg_levels: Sequence[int],
    prune_taus: Sequence[float],
    include_conventional: bool = True,
    fused_only: bool = False,
) -> dict[str, tuple[np.ndarray, list[str]]]:
    """The feature sets of one results table, ``{row label: (X, names)}``.

    Every single-level set is that level's graph features plus (by default) the conventional
    features; the fused set concatenates the conventional features and every level (paper §5).
    ``table11`` gives the fused SEG learned-colour set at every pruning fraction (``tau=0%``...).
    """
    graph, weighting, signal = TABLES[table]
    levels = list(seg_levels if graph == "seg" else shg_levels)
    conv = [(blocks["conventional"], conventional_feature_names())] if include_conventional else []

    def level_block(n: int, tau: float) -> tuple[np.ndarray, list[str]]:
        key = variant_key(graph, weighting, signal, tau, n)
        return blocks[key], feature_names(n, prefix=f"n{n}:")

    def combine(parts: list[tuple[np.ndarray, list[str]]]) -> tuple[np.ndarray, list[str]]:
        return np.hstack([p[0] for p in parts]), [nm for p in parts for nm in p[1]]

    sets: dict[str, tuple[np.ndarray, list[str]]] = {}
    if table == "table11":
        for tau in [0.0, *prune_taus]:
            sets[f"tau={round(100 * tau)}%"] = combine(conv + [level_block(n, tau) for n in levels])
        return sets
    if not fused_only:
        for n in levels:
            sets[_level_label(n)] = combine([*conv, level_block(n, 0.0)])
    sets["fused"] = combine(conv + [level_block(n, 0.0) for n in levels])
    return sets


def edge_density(x: np.ndarray, names: Sequence[str]) -> float:
    """Mean edge density (%) of the graphs behind a feature set: its ``n<k>:D`` columns.

    The learned graphs' sparsity: the mean over images and levels of the density feature ``D``
    (edges with ``w > 0`` over ``n(n-1)/2``); ``nan`` for a set without graph features.
    """
    cols = [i for i, name in enumerate(names) if re.fullmatch(r"n\d+:D", name)]
    return float(100 * x[:, cols].mean()) if cols else float("nan")


def cross_validate_table(
    feature_files: Sequence[str | Path],
    manifests: Sequence[str | Path],
    metrics_out: str | Path,
    selection_out: str | Path,
    *,
    table: str,
    protocol: str,
    seg_levels: Sequence[int],
    shg_levels: Sequence[int],
    prune_taus: Sequence[float],
    n_splits: int = 10,
    include_conventional: bool = True,
    classifier_settings: Mapping[str, Any] | None = None,
    classifiers: Sequence[str] = CLASSIFIERS,
    seed: int = 0,
) -> None:
    """Run the CV of one table and save per-fold metrics and selection counts (parquet).

    ``table="table07"`` runs the fused sets of tables 1–6 under ``protocol`` (the workflow runs
    it with the protocol the other tables do not use, so table 7 can show both).
    """
    samples, blocks = load_features(feature_files, manifests)
    y = samples["target"].to_numpy()
    settings = ClassifierSettings(**(classifier_settings or {}))
    kw = {"seg_levels": seg_levels, "shg_levels": shg_levels, "prune_taus": prune_taus,
          "include_conventional": include_conventional}  # fmt: skip
    frames_m, frames_s = [], []
    sources = [f"table0{i}" for i in range(1, 7)] if table == "table07" else [table]
    for src in sources:
        sets = table_feature_sets(src, blocks, fused_only=table == "table07", **kw)
        res = cross_validate(
            sets, y, classifiers=tuple(classifiers), protocol=protocol, n_splits=n_splits,
            settings=settings, seed=seed,
        )  # fmt: skip
        density = {label: edge_density(x, names) for label, (x, names) in sets.items()}
        frames_m.append(res.metrics.assign(source=src, protocol=protocol,
                                           edge_density=res.metrics["feature_set"].map(density)))  # fmt: skip
        frames_s.append(res.selection.assign(source=src, protocol=protocol))
    for frames, out in ((frames_m, metrics_out), (frames_s, selection_out)):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        pd.concat(frames, ignore_index=True).to_parquet(out)
    logger.info("cv %s (%s): %d images, %d melanomas", table, protocol, len(y), int(y.sum()))


def _results_table(metrics: pd.DataFrame, row_name: str) -> pd.DataFrame:
    mean = metrics.groupby(["feature_set", "classifier"], sort=False)[list(METRICS)].mean()
    long = mean.stack().rename("value").reset_index()
    long.columns = ["feature_set", "classifier", "metric", "value"]
    wide = long.pivot_table(index=["feature_set", "metric"], columns="classifier", values="value",
                            sort=False)  # fmt: skip
    order_sets = list(dict.fromkeys(metrics["feature_set"]))
    idx = pd.MultiIndex.from_product([order_sets, list(METRICS)], names=[row_name, "Metric"])
    cols = [c for c in CLASSIFIERS if c in wide.columns]
    out = wide.reindex(index=idx, columns=cols)
    if "edge_density" in metrics.columns:  # the graphs' sparsity, one value per feature set
        density = metrics.groupby("feature_set", sort=False)["edge_density"].first()
        out[EDGE_DENSITY] = density.reindex(out.index.get_level_values(0)).to_numpy()
    return out.round(2)


def _best_fused(metrics: pd.DataFrame) -> pd.Series:
    fused = metrics[metrics["feature_set"] == "fused"]
    mean = fused.groupby("classifier")[list(METRICS)].mean()
    return mean.max(axis=0)  # per metric, the best classifier (the paper's table 7 mixes them)


def write_tables(
    cv_metrics: Mapping[str, str | Path],
    paper_values: str | Path,
    outputs: Mapping[str, str | Path],
    *,
    main_protocol: str,
) -> None:
    """Write tables 1–12 from the CV results.

    Parameters
    ----------
    cv_metrics : mapping
        ``{"table01": metrics parquet, ..., "table07": the other protocol's fused runs}``.
    paper_values : path
        ``config/paper_values/sp_graphs.csv`` (the cited rows of table 12 come from it).
    outputs : mapping
        ``{"table01": csv path, ..., "table12": csv path}``.
    main_protocol : str
        Protocol of tables 1–6 and 8–11.
    """
    from melrepro.report.tables import write_table

    frames = {t: pd.read_parquet(p) for t, p in cv_metrics.items()}
    for table, (graph, weighting, signal) in TABLES.items():
        row = "Pruning threshold" if table == "table11" else "Graph level"
        title = (
            f"{graph.upper()}, {_WEIGHTING_TITLE[weighting].lower()} weights, "
            f"{_SIGNAL_TITLE[signal].lower()} signals ({main_protocol} selection)"
        )
        write_table(_results_table(frames[table], row), outputs[table], title=title)

    other = frames["table07"]
    other_protocol = str(other["protocol"].iloc[0]) if len(other) else "before_cv"
    rows = []
    for weighting in ("gaussian", "learned"):
        for metric in METRICS:
            rec: dict[str, Any] = {"Weights": _WEIGHTING_TITLE[weighting], "Metric": metric}
            for signal in SIGNALS:
                src = next(t for t, v in TABLES.items() if v == ("seg", weighting, signal))
                rec[_SIGNAL_TITLE[signal]] = _best_fused(frames[src])[metric]
                rec[f"{_SIGNAL_TITLE[signal]} [{other_protocol}]"] = _best_fused(
                    other[other["source"] == src])[metric]  # fmt: skip
            rows.append(rec)
    t7 = pd.DataFrame(rows).set_index(["Weights", "Metric"]).round(2)
    write_table(t7, outputs["table07"],
                title=f"Best fused SEG result per metric; plain columns {main_protocol}, "
                      f"bracketed columns {other_protocol}")  # fmt: skip

    pv = pd.read_csv(paper_values)
    cited = pv[(pv["artifact"] == "table12") & (pv["kind"] == "cited")]
    t12 = cited.pivot_table(
        index="row", columns="column", values="value", aggfunc="first", sort=False
    )
    best = None
    for table in ("table01", "table02", "table03", "table04", "table05", "table06"):
        m = frames[table]
        mean = m[m["feature_set"] == "fused"].groupby("classifier")[list(METRICS)].mean()
        cand = mean.sort_values("AC", ascending=False).iloc[0]
        if best is None or cand["AC"] > best[1]["AC"]:
            best = (table, cand, mean["AC"].idxmax())
    assert best is not None
    table, cand, clf = best
    _, weighting, signal = TABLES[table]
    ours = pd.DataFrame(
        {"AUC": [cand["AUC"] / 100], "AC": [cand["AC"]], "SP": [cand["Spec"]], "SN": [cand["Sens"]],
         "Year": ["this run"], "Dataset": ["ISIC2017 train+test + archive melanomas"],
         "Best classifier": [clf],
         "Features": [f"fused SEG, {_WEIGHTING_TITLE[weighting].lower()} weights, {signal}"]},
        index=pd.Index(["Proposed Approach"], name="Author"),
    )  # fmt: skip
    t12.index.name = "Author"
    t12 = pd.concat([t12, ours.round(4)])
    t12 = t12[[c for c in ("Year", "Dataset", "Features", "Best classifier", "AUC", "AC", "SP", "SN")
               if c in t12.columns]]  # fmt: skip
    write_table(t12, outputs["table12"], title="Comparison with other methods (cited) and our row")


def plot_results(
    cv_metrics: Mapping[str, str | Path],
    cv_selection: Mapping[str, str | Path],
    fig05: str | Path,
    fig06: str | Path,
) -> None:
    """Figure 5 (AUC bars with a mean-AUC line) and figure 6 (selected-feature composition)."""
    from melrepro.report.figures import new_figure, save_figure

    panels = [(w, s) for w in ("gaussian", "learned") for s in SIGNALS]

    def source(w: str, s: str) -> str:
        return next(t for t, v in TABLES.items() if v == ("seg", w, s))

    fig, axes = new_figure(2, 3, figsize=(15, 8), sharey=True)
    for ax, (w, s), letter in zip(axes.ravel(), panels, "abcdef", strict=True):
        m = pd.read_parquet(cv_metrics[source(w, s)])
        auc = m.groupby(["feature_set", "classifier"], sort=False)["AUC"].mean().unstack()
        auc = auc.reindex(index=list(dict.fromkeys(m["feature_set"])),
                          columns=[c for c in CLASSIFIERS if c in auc.columns])  # fmt: skip
        xs = np.arange(len(auc.index))
        width = 0.8 / max(len(auc.columns), 1)
        for j, clf in enumerate(auc.columns):
            ax.bar(xs + (j - len(auc.columns) / 2 + 0.5) * width, auc[clf], width, label=clf)
        ax.plot(xs, auc.mean(axis=1), "k-o", label="mean AUC")
        ax.set_xticks(xs, [str(i) for i in auc.index])
        ax.set_title(f"({letter}) {_SIGNAL_TITLE[s]}, {_WEIGHTING_TITLE[w].lower()} weights")
        ax.set_ylabel("AUC (%)")
        ax.set_ylim(max(0.0, float(np.nanmin(auc.to_numpy())) - 5), 100.5)
    axes.ravel()[0].legend(fontsize=7, ncol=2)
    save_figure(fig, fig05)

    fig, axes = new_figure(2, 3, figsize=(15, 9))
    for ax, (w, s), letter in zip(axes.ravel(), panels, "abcdef", strict=True):
        sel = pd.read_parquet(cv_selection[source(w, s)])
        sel = sel[sel["feature_set"] == "fused"]
        group = sel["feature"].str.extract(r"^n(\d+):")[0]
        group = np.where(group.isna(), "conventional", "n=" + group.fillna(""))
        share = sel.groupby(group)["count"].sum()
        order = ["conventional"] + sorted((g for g in share.index if g != "conventional"),
                                          key=lambda g: int(g[2:]))  # fmt: skip
        share = share.reindex([g for g in order if g in share.index])
        ax.pie(share.to_numpy(), labels=list(share.index), autopct="%1.0f%%", startangle=90)
        ax.set_title(f"({letter}) {_SIGNAL_TITLE[s]}, {_WEIGHTING_TITLE[w].lower()} weights")
    save_figure(fig, fig06)


def _draw_graph(ax: Any, image: np.ndarray, labels: np.ndarray, w: np.ndarray, title: str) -> None:
    import matplotlib as mpl

    n = w.shape[0]
    rows, cols = np.indices(labels.shape)
    counts = np.bincount(labels.ravel(), minlength=n)
    cy = np.bincount(labels.ravel(), rows.ravel(), minlength=n) / counts
    cx = np.bincount(labels.ravel(), cols.ravel(), minlength=n) / counts
    ax.imshow(image, alpha=0.6)
    iu, ju = np.triu_indices(n, k=1)
    carry = w[iu, ju] > 0  # a learned graph is sparse: draw only the edges that carry weight
    iu, ju = iu[carry], ju[carry]
    vals = w[iu, ju]
    norm = mpl.colors.Normalize(vmin=float(vals.min()), vmax=float(vals.max()))
    cmap = mpl.colormaps["coolwarm"]
    for k in np.argsort(vals):
        ax.plot([cx[iu[k]], cx[ju[k]]], [cy[iu[k]], cy[ju[k]]], color=cmap(norm(vals[k])),
                lw=0.3 + 1.5 * norm(vals[k]), alpha=0.15 + 0.85 * norm(vals[k]))  # fmt: skip
    ax.scatter(cx, cy, s=12, c="k")
    ax.set_title(title)
    ax.axis("off")
    ax.figure.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.6,
                       label="edge weight")  # fmt: skip


def plot_examples(
    shards: Sequence[str | Path],
    manifest: str | Path,
    fig01: str | Path,
    fig02: str | Path,
    fig03: str | Path,
    *,
    settings: Mapping[str, Any] | None = None,
    fig02_level: int = 20,
    seed: int = 0,
) -> None:
    """Figures 1–3: sample images, one image's colour graph signal and graphs, superpixel maps."""
    from skimage.segmentation import mark_boundaries

    from melrepro.data.imagecache import read_cache
    from melrepro.report.figures import new_figure, save_figure

    s = ExtractionSettings.from_config(settings or {})
    man = pd.read_parquet(manifest)
    man = man[man["target"].notna()]
    cache = read_cache(shards)
    man = man[man["image_id"].isin(list(cache))].sort_values("image_id")
    rng = np.random.default_rng(seed)
    mel = man[man["target"] == 1]["image_id"].tolist()
    ben = man[man["target"] == 0]["image_id"].tolist()
    if not mel or not ben:
        raise ValueError(f"{shards}: need melanoma and benign images for figures 1-3")
    picks = [*rng.choice(mel, min(2, len(mel)), replace=False),
             *rng.choice(ben, min(2, len(ben)), replace=False)]  # fmt: skip

    fig, axes = new_figure(1, len(picks), figsize=(3.5 * len(picks), 3.6))
    for ax, image_id, letter in zip(axes, picks, "abcd", strict=False):
        ax.imshow(cache[image_id].image)
        kind = "melanoma" if image_id in mel else "benign"
        ax.set_title(f"({letter}) {kind}: {image_id}", fontsize=9)
        ax.axis("off")
    save_figure(fig, fig01)

    image = cache[picks[0]].image
    if s.crop_to_lesion:
        image = image[lesion_box(image, margin=s.crop_margin)]
    maps = pixel_maps(image)
    seg = superpixel_ensemble(image, tuple(s.seg_levels), lab=maps.slic_lab, compactness=s.compactness,
                              sigma=s.sigma, oversample=s.slic_oversample)  # fmt: skip
    level = fig02_level if fig02_level in seg else min(seg)
    labels = seg[level]
    x = node_signals(maps, labels)["color"]
    signal = x[:, SIGNAL_NAMES["color"].index(s.gft_signal["color"])]
    fig, axes = new_figure(1, 3, figsize=(16, 4.8))
    axes[0].bar(np.arange(level), signal, color=np.clip(x[:, :3], 0, 1))
    axes[0].set_xlabel("superpixel")
    axes[0].set_ylabel(f"colour signal ({s.gft_signal['color']})")
    axes[0].set_title(f"(a) colour graph signal, n={level}")
    _draw_graph(axes[1], image, labels, _weights(x, "gaussian", s), "(b) Gaussian-kernel weights")
    _draw_graph(axes[2], image, labels, _weights(x, "learned", s), "(c) MM-learned weights")
    save_figure(fig, fig02)

    shg = _hierarchy(image, tuple(s.shg_levels), lab=maps.slic_lab, finest=seg.get(max(s.shg_levels)),
                     compactness=s.compactness, sigma=s.sigma, oversample=s.slic_oversample)  # fmt: skip
    ncol = max(len(seg), len(shg.labels))
    fig, axes = new_figure(2, ncol, figsize=(3.2 * ncol, 6.2))
    for row, (name, level_maps) in enumerate((("(a) ensemble (SEG)", seg),
                                              ("(b) hierarchy (SHG)", shg.labels))):  # fmt: skip
        for ax, (n, lab_map) in zip(axes[row], sorted(level_maps.items()), strict=False):
            ax.imshow(mark_boundaries(image, lab_map, color=(1, 1, 0)))
            ax.set_title(f"{name}: n={n}" if n == min(level_maps) else f"n={n}", fontsize=9)
            ax.axis("off")
        for ax in axes[row][len(level_maps) :]:
            ax.axis("off")
    save_figure(fig, fig03)
