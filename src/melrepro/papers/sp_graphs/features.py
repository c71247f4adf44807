"""Per-image feature extraction of the sp_graphs paper: superpixel graphs -> feature blocks.

One cache shard's images -> ``features/<dataset>/shard-K.npz`` holding every feature block
(:func:`image_features`: every SEG/SHG level, signal, weighting and pruning fraction, plus the
conventional features); :func:`load_features` concatenates the shards for the CV.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melrepro.methods.conventional_features import conventional_features, otsu_lesion
from melrepro.methods.graph_features import graph_features, local_efficiency
from melrepro.methods.graph_weights import (
    gaussian_weights,
    learn_weights_mm,
    prune_weakest,
    standardize_signals,
)
from melrepro.methods.superpixels import (
    SIGNAL_NAMES,
    Hierarchy,
    PixelMaps,
    RegionSums,
    node_signals,
    pixel_maps,
    region_sums,
    superpixel_ensemble,
    superpixel_hierarchy,
)
from melrepro.papers.sp_graphs.variants import SIGNALS, variant_key

logger = logging.getLogger(__name__)

__all__ = [
    "ExtractionSettings",
    "edge_weights",
    "extract_features_shard",
    "image_features",
    "lesion_box",
    "load_features",
]


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


def edge_weights(x: np.ndarray, weighting: str, s: ExtractionSettings) -> np.ndarray:
    """Edge weights of one graph from its node signals ``x`` (Gaussian kernel or MM-learned)."""
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
    shg = superpixel_hierarchy(
        image, tuple(s.shg_levels), lab=maps.slic_lab, finest=seg.get(finest), compactness=s.compactness,
        sigma=s.sigma, oversample=s.slic_oversample,
    )  # fmt: skip
    out: dict[str, np.ndarray] = {"conventional": conventional}
    sums = _level_sums(maps, seg, shg, finest)
    out.update(_graph_blocks(maps, seg, shg, sums, s))
    return out


def _level_sums(
    maps: PixelMaps, seg: dict[int, np.ndarray], shg: Hierarchy, finest: int
) -> dict[tuple[str, int], RegionSums]:
    """Per-region pixel sums of every SEG and SHG map, ``{(graph, n): sums}``."""
    # SHG levels are unions of finer regions: their pixel sums are added up from the finest map
    # (the SEG map of that size) through the parent links instead of recounting every pixel
    sums = {("seg", n): region_sums(maps, labels) for n, labels in seg.items()}
    shg_levels = sorted(shg.labels, reverse=True)
    fine_sums = sums.get(("seg", finest)) or region_sums(maps, shg.labels[finest])
    sums[("shg", finest)] = fine_sums
    for fine, coarse in zip(shg_levels[:-1], shg_levels[1:], strict=True):
        sums[("shg", coarse)] = sums[("shg", fine)].coarsen(shg.parents[fine])
    return sums


def _graph_blocks(
    maps: PixelMaps,
    seg: dict[int, np.ndarray],
    shg: Hierarchy,
    sums: Mapping[tuple[str, int], RegionSums],
    s: ExtractionSettings,
) -> dict[str, np.ndarray]:
    """The graph feature blocks of every SEG/SHG level, signal, weighting and pruning fraction."""
    finest = max(s.shg_levels)
    out: dict[str, np.ndarray] = {}
    cache: dict[tuple[int, str, str, float], np.ndarray] = {}
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
                    blocks = _pruned_blocks(x, gft, weighting, taus, (map_id, signal), s, cache)
                    for tau, block in zip(taus, blocks, strict=True):
                        out[variant_key(graph, weighting, signal, tau, n)] = block
    return out


def _pruned_blocks(
    x: np.ndarray,
    gft: np.ndarray,
    weighting: str,
    taus: Sequence[float],
    map_signal: tuple[int, str],
    s: ExtractionSettings,
    cache: dict[tuple[int, str, str, float], np.ndarray],
) -> list[np.ndarray]:
    """Graph features of one map's signal graph at every pruning fraction in ``taus``.

    ``cache`` is keyed ``(map id, signal, weighting, tau)``; the weights are learned once, and
    only when some fraction is not cached yet.
    """
    map_id, signal = map_signal
    w_full = None
    out = []
    for tau in taus:
        ck = (map_id, signal, weighting, tau)
        if ck not in cache:
            if w_full is None:
                w_full = edge_weights(x, weighting, s)
            w = prune_weakest(w_full, tau) if tau else w_full
            cache[ck] = graph_features(w, gft, le=local_efficiency(w))
        out.append(cache[ck])
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

    s = settings if isinstance(settings, ExtractionSettings) else ExtractionSettings.from_config(
        settings or {})  # fmt: skip
    images, ids = _shard_images(shard, manifest, splits=splits, max_images=max_images)
    logger.info("shard %s: %d images to process with %d worker(s)", shard, len(ids), threads)
    if threads > 1 and len(ids) > 1:
        results = Parallel(n_jobs=threads)(delayed(_one)(i, images[i], s) for i in ids)
    else:
        results = [_one(i, images[i], s) for i in ids]
    output = Path(output)
    keys = _save_blocks(output, ids, results)
    logger.info("wrote %s (%d images, %d blocks)", output, len(ids), len(keys))
    return output


def _shard_images(
    shard: str | Path,
    manifest: str | Path,
    *,
    splits: Sequence[str] | None,
    max_images: int | None,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The shard's labelled images of ``splits``, ``({image_id: image}, sorted ids to process)``."""
    from melrepro.data.imagecache import load_shard

    man = pd.read_parquet(manifest)
    man = man[man["target"].notna()]
    if splits is not None:
        man = man[man["official_split"].isin(list(splits))]
    wanted = set(man["image_id"])
    images = {k: v.image for k, v in load_shard(shard).items() if k in wanted}
    ids = sorted(images)
    if max_images is not None:
        ids = ids[:max_images]
    return images, ids


def _save_blocks(output: Path, ids: list[str], results: list[tuple[str, dict]]) -> list[str]:
    """Stack the per-image blocks into ``output`` (written atomically); returns the block keys."""
    keys = sorted(results[0][1]) if results else []
    arrays = {k: np.stack([r[1][k] for r in results]) for k in keys}
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.stem + ".tmp.npz")
    np.savez_compressed(tmp, image_ids=np.array(ids, dtype=str), **arrays)
    tmp.replace(output)
    return keys


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
