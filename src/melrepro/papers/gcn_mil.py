"""Path-level steps of the ``gcn_mil`` paper: block features, training, evaluation, tables, figures.

Every public function here reads files, calls the pure methods of :mod:`melrepro.methods.mil` and
writes files; the Snakemake scripts call exactly one of them. The data flow is

    cache shard ──extract_gcn_mil_features──▶ features/shard-K.pt (bags, one per image × DR angle
                                              × view) + shard-K_zero.pt (0° bags only)
    features ──train_gcn_mil──▶ models/A/run-R.pt (+ checkpoints/, history; A = block | stride)
    model + 0° features + cache ──evaluate_gcn_mil──▶ evaluation/A/run-R.{csv,json,npz}
    evaluation of all runs ──tabulate_gcn_mil / plot_gcn_mil──▶ tables/, figures/

The backbone is frozen and its block features are cached per shard (float16, memory-mapped at
load, cast per batch on the device), so a training epoch only runs the GCN-MIL head. Edges are
not stored: each grid's Eq. 1 graph is rebuilt once at load for the reading of its radius.

Artifact index (id: function that writes it):

    table01-table05  tabulate_gcn_mil (one section per table, marked by its id)
    fig01            the rule graph: melrepro.report.rulegraph via workflow/rules/report.smk
    fig02-fig06      plot_gcn_mil (one section per figure, marked by its id)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from melrepro.methods import mil
from melrepro.methods.devices import choose_device

logger = logging.getLogger(__name__)

__all__ = [
    "BagOptions",
    "ModelOptions",
    "TrainOptions",
    "extract_gcn_mil_features",
    "load_bags",
    "plot_gcn_mil",
    "tabulate_gcn_mil",
    "thresholds_from",
    "train_gcn_mil",
    "evaluate_gcn_mil",
]

#: Row label of our method in Tables 4 and 5, as the paper writes it (the scorecard matches it).
OUR_ROW = "GCN-based MIL(ours)"
#: How Table 5 names the two readings of Eq. 1's radius.
ADJACENCY_TITLES = {"block": "√2·k (k = block side, literal)", "stride": "√2·s (s = stride)"}
CLASS_TITLES = {
    "melanoma": "Melanoma",
    "seborrheic_keratosis": "Seborrheic Keratosis",
    "nevus": "Nevus",
}

#: Departures from the paper in every run, recorded in run_info.json.
DEVIATIONS = [
    "Eq. 3 score = max(p) * alpha / max(alpha) (the literal softmax(p x alpha) has no usable scale)",
    "backbone frozen, block features cached (paper: end-to-end fine-tuning)",
    "block features standardised per channel with training-set statistics",
    "random flips / 90-degree rotations: dihedral_views of the 8 are precomputed per training "
    "bag and one is drawn per epoch (dihedral_views = 1: none)",
    "READING: Eq. 1's radius sqrt(2) * k read as the block side (block) or the stride (stride); "
    "both are trained and reported",
    "READING: section 3's learning-rate 'drop' from 1e-5 to 1e-4 is a rise as written; "
    "config train.lr_reading records which reading ran (literal or drop)",
]


@dataclass
class BagOptions:
    """How an image becomes a bag (Eq. 4, Eq. 1, Table 1); sizes in original-image pixels.

    ``scale`` < 1 resizes the images and multiplies ``block_size`` and ``strides`` by the
    same factor, so the block grid covers the same part of the lesion as the paper's; the
    stride band is still chosen from the original height.

    ``data_path`` picks where rotations, flips and block extraction run: ``cpu`` (scipy and
    numpy, the embedded default), ``device`` (torch tensors on the extraction device:
    torchvision rotation, ``unfold``) or ``auto`` (``device`` on CUDA, ``cpu`` otherwise).
    ``mixed_precision`` (``auto``: bf16 where CUDA supports it, else fp16; ``off``) is used on
    CUDA only. Neither changes which blocks are cut, only where and how fast.
    """

    block_size: int = 224
    strides: Sequence[int] = (50, 120, 200)
    height_bounds: Sequence[int] = (1000, 2000)
    scale: float = 1.0
    cover_edges: bool = False
    radius_factor: float = float(np.sqrt(2))
    adjacency_radius: str = "block"
    rotation_steps: Mapping[str, float] = field(
        default_factory=lambda: {"melanoma": 18.0, "seborrheic_keratosis": 18.0, "nevus": 45.0}
    )
    batch_size: int = 64
    dihedral_views: int = 8
    data_path: str = "auto"
    mixed_precision: str = "auto"

    @property
    def working_block_size(self) -> int:
        return max(1, round(self.block_size * self.scale))

    def working_stride(self, original_height: int) -> int:
        stride = mil.stride_for_height(
            original_height, strides=self.strides, height_bounds=self.height_bounds
        )
        return max(1, round(stride * self.scale))


@dataclass
class ModelOptions:
    """Sizes of the GCN-MIL head (Table 2)."""

    hidden_channels: int = 512
    attention_channels: int = 128
    init: str = "pytorch"


@dataclass
class TrainOptions:
    """§3 training settings: SGD, momentum 0.9, lr 1e-5, changed at epoch 200 of 400.

    §3 says "the learning rate drop to 0.0001 at 200 epochs" after an initial 0.00001: a drop
    written as a ten-fold rise. ``lr_reading`` chooses: ``literal`` goes to ``lr_after`` as
    written (a rise); ``drop`` divides by the same factor instead (``lr**2 / lr_after``, 1e-6).
    """

    epochs: int = 400
    lr: float = 1e-5
    lr_milestone: int = 200
    lr_after: float = 1e-4
    lr_reading: str = "literal"
    momentum: float = 0.9
    batch_size: int = 1
    standardize_features: bool = True

    @property
    def lr_gamma(self) -> float:
        """Factor applied to the learning rate at ``lr_milestone``."""
        if self.lr_reading == "literal":
            return self.lr_after / self.lr
        if self.lr_reading == "drop":
            return min(self.lr_after / self.lr, self.lr / self.lr_after)
        raise ValueError(f"unknown lr_reading {self.lr_reading!r}; choose 'literal' or 'drop'")


def _options(cls: type, values: Mapping[str, Any] | Any | None) -> Any:
    if values is None:
        return cls()
    if isinstance(values, cls):
        return values
    return cls(**dict(values))


# --------------------------------------------------------------------------- shared helpers


def _manifest_with_split(manifest_path: str | Path, split_path: str | Path) -> pd.DataFrame:
    manifest = pd.read_parquet(manifest_path).set_index("image_id")
    split = pd.read_parquet(split_path).set_index("image_id")["split"]
    manifest["split"] = split.reindex(manifest.index)
    unknown = set(manifest["label"].dropna()) - set(mil.CLASSES)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not ISIC 2017 classes {mil.CLASSES}")
    return manifest


def _working(array: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    """Resize an image (order 1) or mask (order 0) to the working shape, keeping its dtype."""
    if array.shape[:2] == tuple(shape):
        return array
    from skimage.transform import resize

    out = resize(
        array, shape, order=order, preserve_range=True, anti_aliasing=order > 0, mode="edge"
    )
    return np.rint(out).astype(array.dtype)


def _working_shape(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(height * scale)), max(1, round(width * scale))


def _read_cache(paths: Sequence[str | Path]) -> dict[str, Any]:
    from melrepro.data.imagecache import read_cache

    return read_cache([str(p) for p in paths])


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _write_run_info(directory: Path, run_info: Mapping[str, Any] | None, **extra: Any) -> None:
    from melrepro.report.runinfo import write_run_info

    info = dict(run_info or {})
    write_run_info(
        directory,
        data_source=info.pop("data_source", "unknown"),
        seed=info.pop("seed", None),
        device=extra.pop("device", info.pop("device", None)),
        weights=extra.pop("weights", None),
        deviations=DEVIATIONS,
        **{**info, **extra},
    )


def _write_run_info_file(path: Path, run_info: Mapping[str, Any] | None, **extra: Any) -> None:
    """Like :func:`_write_run_info`, into a named JSON file (one per shard, not per folder)."""
    from melrepro.report.runinfo import run_info as make_run_info

    info = dict(run_info or {})
    record = make_run_info(
        data_source=info.pop("data_source", "unknown"),
        seed=info.pop("seed", None),
        device=extra.pop("device", info.pop("device", None)),
        weights=extra.pop("weights", None),
        deviations=DEVIATIONS,
        **{**info, **extra},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def thresholds_from(start: float = 0.0, stop: float = 1.0, step: float = 0.05) -> np.ndarray:
    """The η grid of §2.3 (0 to 1 every 0.05), rounded so 0.3 is 0.3 and not 0.30000000000000004."""
    n = round((stop - start) / step)
    return np.round(start + step * np.arange(n + 1), 10)


# --------------------------------------------------------------------------- features

#: Version of the feature-file layout written by :func:`extract_gcn_mil_features`.
FEATURE_FORMAT = 2


def _check_cache_resolution(image_id: str, cache_path, cached: tuple, shape: tuple) -> None:
    """Refuse a cache smaller than the working shape (it would be silently upsampled)."""
    # One pixel of slack: a max<N> cache and round(scale * size) may round apart.
    if cached[0] < shape[0] - 1 or cached[1] < shape[1] - 1:
        raise ValueError(
            f"{cache_path}: image {image_id} is cached at {cached[0]}x{cached[1]} (HxW) but the "
            f"working shape is {shape[0]}x{shape[1]} (scale x original size); choose a larger "
            "gcn_mil.cache_res (or orig) or a smaller scale"
        )


def _feature_device_path(options: BagOptions, dev: torch.device) -> bool:
    if options.data_path not in ("auto", "cpu", "device"):
        raise ValueError(
            f"unknown data_path {options.data_path!r}; choose 'auto', 'cpu' or 'device'"
        )
    return options.data_path == "device" or (options.data_path == "auto" and dev.type == "cuda")


def _autocast(options: BagOptions, dev: torch.device):
    """bf16/fp16 autocast on CUDA (``mixed_precision``), nothing elsewhere."""
    import contextlib

    if dev.type != "cuda" or options.mixed_precision == "off":
        return contextlib.nullcontext()
    if options.mixed_precision == "auto":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[options.mixed_precision]
    return torch.autocast(device_type="cuda", dtype=dtype)


def _bag_views(image: np.ndarray, angles, views, on_device: bool, dev: torch.device):
    """Yield ``(angle, view, oriented image)``: numpy (H, W, 3) or a (3, H, W) device tensor."""
    if on_device:
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        if dev.type == "cuda":
            tensor = tensor.pin_memory()
        tensor = tensor.to(dev, non_blocking=True)
    for angle in angles:
        rotated = mil.rotate_tensor(tensor, angle) if on_device else mil.rotate_image(image, angle)
        for view in views:
            if on_device:
                yield angle, view, mil.dihedral_tensor(rotated, view)
            else:
                yield angle, view, mil.dihedral(rotated, view)


def extract_gcn_mil_features(
    cache_path: str | Path,
    manifest_path: str | Path,
    split_path: str | Path,
    output_path: str | Path,
    zero_path: str | Path | None = None,
    run_info_path: str | Path | None = None,
    *,
    bags: Mapping[str, Any] | BagOptions | None = None,
    pretrained: bool = False,
    seed: int = 0,
    device: str = "auto",
    threads: int = 1,
    run_info: Mapping[str, Any] | None = None,
) -> Path:
    """Turn every image of one cache shard into bags and cache their ResNet18 block features.

    Training images get one bag per DR rotation angle of their class (Table 1) and dihedral
    view; validation and test images one bag (0°). The frozen backbone is built from ``seed``
    so every shard uses the same random weights when ``pretrained`` is false.

    Parameters
    ----------
    cache_path : path
        One ``results/data/isic2017/cache/<res>/shard-K.npz``.
    manifest_path, split_path : path
        The isic2017 manifest and its ``official`` split.
    output_path : path
        ``.pt`` file ``{"format": 2, "options", "weights", "grids", "bags"}``. ``grids`` maps
        ``(height, width, k, stride)`` to the (N, 2) int32 top-left corners of that block grid,
        stored once for all the bags on it; each bag has ``image_id, split, label, angle, view,
        shape, block_size, stride, grid, features`` (float16, N x 512). Edges are not stored:
        they depend only on the grid and the reading of Eq. 1 and are rebuilt at load
        (:class:`BagGraphs`).
    zero_path : path, optional
        The same layout with only the image itself (0°, view 0) of every image: what
        evaluation and figures read, so they never load the DR copies.
    run_info_path : path, optional
        This shard's run-info JSON (default ``<output stem>_run_info.json``).
    bags : BagOptions or mapping, optional
    pretrained : bool, optional
        ImageNet weights for the backbone (never replaced by random ones if unavailable).
    seed : int, optional
    device : {"auto", "cpu", "cuda"}, optional
    threads : int, optional
        torch CPU threads.
    run_info : mapping, optional
        Recorded in the run-info JSON.
    """
    options = _options(BagOptions, bags)
    torch.set_num_threads(max(1, threads))
    dev = choose_device(device)
    on_device = _feature_device_path(options, dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    manifest = _manifest_with_split(manifest_path, split_path)
    cache = _read_cache([cache_path])
    torch.manual_seed(seed)
    encoder = mil.BlockEncoder(pretrained=pretrained).to(dev).eval()
    if dev.type == "cuda":
        encoder = encoder.to(memory_format=torch.channels_last)
    k = options.working_block_size
    records: list[dict[str, Any]] = []
    grids: dict[tuple[int, int, int, int], torch.Tensor] = {}
    n_blocks, started = 0, time.perf_counter()
    for image_id in sorted(cache):
        if image_id not in manifest.index or pd.isna(manifest.at[image_id, "split"]):
            logger.warning("%s is in the cache but not in the manifest split; skipped", image_id)
            continue
        row = manifest.loc[image_id]
        label, split = str(row["label"]), str(row["split"])
        shape = _working_shape(int(row["width"]), int(row["height"]), options.scale)
        cached = cache[image_id].image
        _check_cache_resolution(image_id, cache_path, cached.shape[:2], shape)
        image = _working(cached, shape, order=1)
        stride = options.working_stride(int(row["height"]))
        angles = mil.rotation_angles(options.rotation_steps[label]) if split == "train" else [0.0]
        views = range(options.dihedral_views) if split == "train" else range(1)
        for angle, view, oriented in _bag_views(image, angles, views, on_device, dev):
            view_shape = tuple(oriented.shape[-2:] if on_device else oriented.shape[:2])
            key = (*view_shape, k, stride)
            if key not in grids:
                coords = mil.block_grid(
                    *view_shape, block_size=k, stride=stride, cover_edges=options.cover_edges
                )
                grids[key] = torch.from_numpy(coords.astype(np.int32))
            coords = grids[key].numpy()
            chunks = []
            with torch.inference_mode(), _autocast(options, dev):
                if on_device:
                    for batch in mil.tensor_block_batches(oriented, coords, k, options.batch_size):
                        chunks.append(encoder(batch, channels_first=True).to(torch.float16))
                else:
                    for batch in mil.block_batches(oriented, coords, k, options.batch_size):
                        out = encoder(torch.from_numpy(batch).to(dev, non_blocking=True))
                        chunks.append(out.to(torch.float16))
            n_blocks += len(coords)
            records.append(
                {
                    "image_id": image_id,
                    "split": split,
                    "label": label,
                    "angle": float(angle),
                    "view": view,
                    "shape": view_shape,
                    "block_size": k,
                    "stride": stride,
                    "grid": key,
                    "features": torch.cat(chunks).cpu(),
                }
            )
    elapsed = time.perf_counter() - started
    rate = n_blocks / max(elapsed, 1e-9)
    logger.info(
        "%d bags, %d blocks of %dpx in %.1fs (%.0f blocks/s on %s, %s data path)",
        len(records),
        n_blocks,
        k,
        elapsed,
        rate,
        dev,
        "tensor" if on_device else "numpy",
    )
    output_path = Path(output_path)
    header = {"format": FEATURE_FORMAT, "options": asdict(options), "weights": encoder.weights_name}
    _atomic_torch_save({**header, "grids": grids, "bags": records}, output_path)
    if zero_path is not None:
        zero = [r for r in records if _is_zero_bag(r)]
        used = {r["grid"] for r in zero}
        _atomic_torch_save(
            {**header, "grids": {g: c for g, c in grids.items() if g in used}, "bags": zero},
            Path(zero_path),
        )
    _write_run_info_file(
        Path(run_info_path or output_path.with_name(f"{output_path.stem}_run_info.json")),
        run_info,
        config={"bags": asdict(options), "pretrained": pretrained},
        weights=encoder.weights_name,
        device=str(dev),
        working_block_size=k,
        scale=options.scale,
        data_path="tensor" if on_device else "numpy",
        blocks_per_second=rate,
        n_bags=len(records),
        n_blocks=n_blocks,
    )
    return output_path


def _is_zero_bag(bag: Mapping[str, Any]) -> bool:
    return bag["angle"] == 0.0 and bag.get("view", 0) == 0


def load_bags(
    feature_paths: Sequence[str | Path],
    *,
    splits: Sequence[str] | None = None,
    angle_zero_only: bool = False,
) -> list[dict[str, Any]]:
    """Read the bags of several feature shards, optionally only some splits / only the image
    itself (0°, no flip or quarter turn: ``angle_zero_only``).

    Files are memory-mapped: the float16 features are paged in from disk when a batch reads
    them, so training holds no copy of the whole set. Each bag gets ``coords`` (its grid's
    int32 corners, one tensor shared by all bags on that grid).
    """
    out = []
    for path in feature_paths:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if content.get("format") != FEATURE_FORMAT:
            raise ValueError(
                f"{path}: feature-file format {content.get('format')!r}, expected "
                f"{FEATURE_FORMAT}; delete it and re-run extract_gcn_mil_features"
            )
        grids = content["grids"]
        for bag in content["bags"]:
            if splits is not None and bag["split"] not in splits:
                continue
            if angle_zero_only and not _is_zero_bag(bag):
                continue
            bag["coords"] = grids[bag["grid"]]
            out.append(bag)
    return out


class BagGraphs:
    """Eq. 1 edges of each block grid, built once per grid from its coordinates (int32).

    Every DR rotation and dihedral view of the same image size shares one grid, so one edge
    list serves all of them (the old layout stored an int64 copy in each of ~94 bags per
    training image).

    Parameters
    ----------
    reading : {"block", "stride"}
        The reading of Eq. 1's k (:func:`melrepro.methods.mil.adjacency_unit`).
    radius_factor : float
        √2 in the paper.
    """

    def __init__(self, reading: str = "block", radius_factor: float = float(np.sqrt(2))) -> None:
        if reading not in mil.ADJACENCY_READINGS:
            raise ValueError(
                f"unknown adjacency_radius {reading!r}; choose one of {mil.ADJACENCY_READINGS}"
            )
        self.reading = reading
        self.radius_factor = float(radius_factor)
        self._edges: dict[Any, torch.Tensor] = {}

    def __call__(self, bag: Mapping[str, Any]) -> torch.Tensor:
        """The ``(2, E)`` int32 edge list of a bag's grid."""
        key = tuple(bag["grid"]) if "grid" in bag else id(bag["coords"])
        if key not in self._edges:
            k = int(bag["block_size"])
            unit = mil.adjacency_unit(self.reading, k, int(bag["stride"]))
            centres = mil.block_centres(np.asarray(bag["coords"]), k)
            edges = mil.block_adjacency(
                centres, unit, radius_factor=self.radius_factor, dtype=np.int32
            )
            self._edges[key] = torch.from_numpy(edges)
        return self._edges[key]

    def mean_degree(self, bags: Sequence[Mapping[str, Any]]) -> float:
        """Mean number of neighbours per block over ``bags``."""
        edges = sum(self(b).shape[1] for b in bags)
        return edges / max(sum(len(b["coords"]) for b in bags), 1)


def _collate(bags: Sequence[Mapping[str, Any]], graphs: BagGraphs, dev: torch.device):
    """One mini-batch on ``dev``: float16 features cast to float32 there, int64 edges offset per bag."""
    sizes = [len(b["features"]) for b in bags]
    x = torch.cat([b["features"] for b in bags]).to(dev, non_blocking=True).float()
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    edge_index = torch.cat(
        [graphs(b).to(dev).long() + int(o) for b, o in zip(bags, offsets, strict=True)], dim=1
    )
    batch = torch.repeat_interleave(
        torch.arange(len(bags), device=dev), torch.tensor(sizes, device=dev)
    )
    y = torch.tensor([mil.CLASSES.index(b["label"]) for b in bags], device=dev)
    return x, edge_index, batch, y


def feature_moments(bags: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (n-1) standard deviation of the blocks of all ``bags``, streamed.

    One bag at a time in float64, merged with Chan et al.'s pairwise update, so no
    concatenation of the training set is ever made. Returns float32 tensors.
    """
    n, mean, m2 = 0, None, None
    for bag in bags:
        x = bag["features"].to(torch.float64)
        nb = x.shape[0]
        if nb == 0:
            continue
        mb = x.mean(0)
        m2b = ((x - mb) ** 2).sum(0)
        if mean is None:
            n, mean, m2 = nb, mb, m2b
            continue
        delta = mb - mean
        total = n + nb
        mean = mean + delta * (nb / total)
        m2 = m2 + m2b + delta**2 * (n * nb / total)
        n = total
    if mean is None:
        raise ValueError("no blocks to compute feature statistics from")
    std = (m2 / max(n - 1, 1)).sqrt()
    return mean.float(), std.float()


# --------------------------------------------------------------------------- training


def _run_epoch(
    model, bags, graphs, optimizer, dev, batch_size: int, *, epoch: int, lr: float
) -> tuple[float, float]:
    """One pass over ``bags`` (in that order); raises at once on a non-finite training loss."""
    training = optimizer is not None
    model.train(training)
    total, correct, loss_sum = 0, 0, 0.0
    with torch.set_grad_enabled(training):
        for start in range(0, len(bags), batch_size):
            x, edge_index, batch, y = _collate(bags[start : start + batch_size], graphs, dev)
            logits, _ = model(x, edge_index, batch)
            loss = nn.functional.cross_entropy(logits, y)
            value = float(loss.detach())
            if training and not np.isfinite(value):
                raise FloatingPointError(
                    f"training loss is {value} at epoch {epoch}, step {start // batch_size} "
                    f"(learning rate {lr:g}); the run diverged: lower train.lr / train.lr_after"
                )
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            loss_sum += value * len(y)
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
    return loss_sum / max(total, 1), correct / max(total, 1)


def train_gcn_mil(
    feature_paths: Sequence[str | Path],
    model_path: str | Path,
    history_path: str | Path,
    checkpoint_dir: str | Path,
    *,
    run: int = 0,
    seed: int = 0,
    adjacency: str = "block",
    radius_factor: float = float(np.sqrt(2)),
    model: Mapping[str, Any] | ModelOptions | None = None,
    train: Mapping[str, Any] | TrainOptions | None = None,
    device: str = "auto",
    threads: int = 1,
    run_info: Mapping[str, Any] | None = None,
) -> Path:
    """Train one GCN-MIL run on the cached DR bags, resuming from a checkpoint when present.

    A checkpoint dict (model, optimizer, scheduler, epoch, seed, run) is written to
    ``checkpoint_dir/checkpoint.pt`` after every epoch; the shuffling of epoch ``e`` is seeded
    by ``(seed, run, e)``, so a resumed run follows the same path as an uninterrupted one. A
    checkpoint past the requested ``epochs`` is not used (the run is retrained from scratch).

    Parameters
    ----------
    feature_paths : sequence of path
        Outputs of :func:`extract_gcn_mil_features`.
    model_path : path
        Final ``{"model": state_dict, "model_options": ..., "adjacency": ..., "run": ...}``.
    history_path : path
        TSV, one row per epoch: ``epoch, lr, train_loss, train_accuracy, val_loss,
        val_accuracy, seconds``.
    checkpoint_dir : path
        Not a Snakemake output, so an interrupted job keeps it.
    run, seed : int
        Run index (0..4 for the paper's five runs); the torch seed is ``seed + run``.
    adjacency : {"block", "stride"}
        Reading of Eq. 1's radius (:func:`melrepro.methods.mil.adjacency_unit`).
    radius_factor : float
        √2 in the paper.
    model, train : options or mappings, optional
    device : {"auto", "cpu", "cuda"}
    threads : int
    run_info : mapping, optional

    Raises
    ------
    FloatingPointError
        As soon as a training loss is not finite (epoch, step and learning rate named).
    """
    model_opts = _options(ModelOptions, model)
    train_opts = _options(TrainOptions, train)
    gamma = train_opts.lr_gamma
    torch.set_num_threads(max(1, threads))
    dev = choose_device(device)
    run_seed = seed + run
    graphs = BagGraphs(adjacency, radius_factor)
    train_set = load_bags(feature_paths, splits=["train"])
    # One draw per (image, DR angle) and epoch among its precomputed flips / quarter turns.
    groups: dict[tuple[str, float], list[int]] = {}
    for i, bag in enumerate(train_set):
        groups.setdefault((bag["image_id"], bag["angle"]), []).append(i)
    members = list(groups.values())
    val_set = load_bags(feature_paths, splits=["val"], angle_zero_only=True)
    if not train_set:
        raise ValueError(f"no training bags in {list(feature_paths)}")
    logger.info(
        "run %d: %d training bags (DR) in %d views, %d validation bags; adjacency %s "
        "(mean degree %.1f)",
        run,
        len(members),
        len(train_set),
        len(val_set),
        adjacency,
        graphs.mean_degree([train_set[m[0]] for m in members]),
    )

    torch.manual_seed(run_seed)
    net = mil.GCNMIL(
        train_set[0]["features"].shape[1],
        model_opts.hidden_channels,
        model_opts.attention_channels,
        len(mil.CLASSES),
        init=model_opts.init,
    ).to(dev)
    if train_opts.standardize_features:
        # DEVIATION: block features standardised per channel with training statistics, because
        # frozen (and random-init) ResNet18 features vary little between blocks; the paper
        # fine-tunes the backbone instead.
        mean, std = feature_moments(train_set)
        net.set_feature_scaling(mean.to(dev), std.to(dev))
    optimizer = torch.optim.SGD(net.parameters(), lr=train_opts.lr, momentum=train_opts.momentum)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[train_opts.lr_milestone], gamma=gamma
    )
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_path = checkpoint_dir / "checkpoint.pt"
    history: list[dict[str, float]] = []
    start_epoch = 0
    # A checkpoint is resumed only by the same run of the same settings on the same features.
    fingerprint = json.dumps(
        {
            "model": asdict(model_opts),
            # More epochs continue a run; any other change starts afresh.
            "train": {k: v for k, v in asdict(train_opts).items() if k != "epochs"},
            "graph": [adjacency, float(radius_factor)],
            "features": [
                (str(p), Path(p).stat().st_size, Path(p).stat().st_mtime_ns) for p in feature_paths
            ],
        },
        sort_keys=True,
    )
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        same = (
            state.get("seed") == seed
            and state.get("run") == run
            and state.get("fingerprint") == fingerprint
        )
        if same and int(state["epoch"]) + 1 > train_opts.epochs:
            logger.warning(
                "ignoring %s: it is at epoch %d, past the %d epochs asked for; retraining",
                checkpoint_path,
                int(state["epoch"]) + 1,
                train_opts.epochs,
            )
        elif same:
            net.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_epoch = int(state["epoch"]) + 1
            history = list(state.get("history", []))
            logger.info("resumed run %d from %s at epoch %d", run, checkpoint_path, start_epoch)
        else:
            logger.warning(
                "ignoring %s: it belongs to another seed, run, settings or features",
                checkpoint_path,
            )

    logger.info(
        "start training: %d epochs on %s, lr %g -> x%g at epoch %d (%s reading)",
        train_opts.epochs,
        dev,
        train_opts.lr,
        gamma,
        train_opts.lr_milestone,
        train_opts.lr_reading,
    )
    started = time.perf_counter()
    for epoch in range(start_epoch, train_opts.epochs):
        t0 = time.perf_counter()
        generator = torch.Generator().manual_seed(run_seed * 100_003 + epoch)
        # 2520 is divisible by every view count 1..8, so the modulo below is uniform.
        picks = torch.randint(0, 2520, (len(members),), generator=generator)
        epoch_set = [train_set[m[int(p) % len(m)]] for m, p in zip(members, picks, strict=True)]
        order = torch.randperm(len(epoch_set), generator=generator).tolist()
        epoch_set = [epoch_set[i] for i in order]
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = _run_epoch(
            net, epoch_set, graphs, optimizer, dev, train_opts.batch_size, epoch=epoch, lr=lr
        )
        scheduler.step()
        val_loss, val_acc = (
            _run_epoch(net, val_set, graphs, None, dev, train_opts.batch_size, epoch=epoch, lr=lr)
            if val_set
            else (float("nan"), float("nan"))
        )
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        logger.info(
            "epoch=%03d lr=%.1e loss=%.4f acc=%.3f val_loss=%.4f val_acc=%.3f",
            epoch,
            lr,
            train_loss,
            train_acc,
            val_loss,
            val_acc,
        )
        _atomic_torch_save(
            {
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "seed": seed,
                "run": run,
                "fingerprint": fingerprint,
                "history": history,
            },
            checkpoint_path,
        )
    logger.info("training done in %.1fs", time.perf_counter() - started)
    model_path = Path(model_path)
    graph = {"adjacency": adjacency, "radius_factor": float(radius_factor)}
    _atomic_torch_save(
        {
            "model": net.state_dict(),
            "model_options": asdict(model_opts),
            "graph": graph,
            "run": run,
            "seed": seed,
        },
        model_path,
    )
    history_path = Path(history_path)
    history_path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(history).to_csv(history_path, sep="\t", index=False)
    _write_run_info(
        model_path.parent,
        run_info,
        config={
            "model": asdict(model_opts),
            "train": asdict(train_opts),
            "graph": graph,
            "run": run,
        },
        device=str(dev),
        weights="GCN-MIL head trained on cached frozen-backbone features",
    )
    return model_path


def _load_model(
    model_path: str | Path, in_channels: int, dev: torch.device
) -> tuple[mil.GCNMIL, BagGraphs]:
    state = torch.load(model_path, map_location="cpu", weights_only=True)
    opts = ModelOptions(**state["model_options"])
    net = mil.GCNMIL(
        in_channels,
        opts.hidden_channels,
        opts.attention_channels,
        len(mil.CLASSES),
        init=opts.init,
    )
    net.load_state_dict(state["model"])
    graph = state.get("graph", {})
    graphs = BagGraphs(
        graph.get("adjacency", "block"), graph.get("radius_factor", float(np.sqrt(2)))
    )
    return net.to(dev).eval(), graphs


# --------------------------------------------------------------------------- evaluation


def _predict_bag(
    net: mil.GCNMIL, graphs: BagGraphs, bag: Mapping[str, Any], dev
) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        x, edge_index, batch, _ = _collate([bag], graphs, dev)
        logits, alpha = net(x, edge_index, batch)
    return torch.softmax(logits[0], 0).cpu().numpy(), alpha.cpu().numpy()


def recognition_metrics(predictions: pd.DataFrame) -> dict[str, float]:
    """SK-AUC, melanoma AUC, accuracy and recall (melanoma vs rest) of §3.2.

    ``predictions`` has ``label`` and ``p_<class>`` columns; a bag is called melanoma when
    melanoma is its most probable class.
    """
    from sklearn.metrics import accuracy_score, recall_score, roc_auc_score

    def auc(y: np.ndarray, score: np.ndarray) -> float:
        return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else float("nan")

    y_mel = (predictions["label"] == "melanoma").to_numpy().astype(int)
    y_sk = (predictions["label"] == "seborrheic_keratosis").to_numpy().astype(int)
    probs = predictions[[f"p_{c}" for c in mil.CLASSES]].to_numpy()
    called_mel = (probs.argmax(1) == mil.CLASSES.index("melanoma")).astype(int)
    return {
        "sk_auc": auc(y_sk, predictions["p_seborrheic_keratosis"].to_numpy()),
        "auc": auc(y_mel, predictions["p_melanoma"].to_numpy()),
        "accuracy": float(accuracy_score(y_mel, called_mel)),
        "recall": float(recall_score(y_mel, called_mel, zero_division=0.0)),
    }


def evaluate_gcn_mil(
    model_path: str | Path,
    feature_paths: Sequence[str | Path],
    cache_paths: Sequence[str | Path],
    predictions_path: str | Path,
    sweep_path: str | Path,
    metrics_path: str | Path,
    scores_path: str | Path,
    *,
    thresholds: Mapping[str, float] | None = None,
    device: str = "auto",
    threads: int = 1,
    run_info: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Recognition metrics on the test set and Eq. 3 segmentation with η chosen on training.

    ``feature_paths`` are the 0° feature files (``zero_path`` of
    :func:`extract_gcn_mil_features`; full shards work too, only their 0° bags are used).
    Feature shard K must come from cache shard K (same order). One pass over the shards
    computes, for every training and test image (0° bag), the Jaccard index of the
    thresholded score map against its Part 1 mask at each η; η* maximises the training mean
    (ties: the smallest η) and the test Jaccard is the test mean at η*.

    Writes ``predictions_path`` (CSV: image_id, split, label, p_<class>, jaccard at η*),
    ``sweep_path`` (CSV: eta, train_jaccard, test_jaccard), ``metrics_path`` (JSON:
    sk_auc, auc, accuracy, recall, jaccard, eta) and ``scores_path`` (npz: the attention
    weight of every block ``alpha__<id>`` for every 0° bag, and the Eq. 3 block scores
    ``scores__<id>`` of training and test images, for the figures).
    """
    torch.set_num_threads(max(1, threads))
    dev = choose_device(device)
    etas = thresholds_from(**dict(thresholds or {}))
    if len(feature_paths) != len(cache_paths):
        raise ValueError(
            f"{len(feature_paths)} feature shards but {len(cache_paths)} cache shards; "
            "they must pair up"
        )
    net = None
    rows, per_image = [], {}
    all_bags: list[dict[str, Any]] = []
    scores_out: dict[str, np.ndarray] = {}
    for feature_path, cache_path in zip(feature_paths, cache_paths, strict=True):
        bags = load_bags([feature_path], angle_zero_only=True)
        if not bags:
            continue
        if net is None:
            net, graphs = _load_model(model_path, bags[0]["features"].shape[1], dev)
        cache = None
        all_bags.extend({k: b[k] for k in ("coords", "block_size", "stride", "grid")} for b in bags)
        for bag in bags:
            probs, alpha = _predict_bag(net, graphs, bag, dev)
            row = {"image_id": bag["image_id"], "split": bag["split"], "label": bag["label"]}
            row.update({f"p_{c}": float(p) for c, p in zip(mil.CLASSES, probs, strict=True)})
            rows.append(row)
            scores_out[f"alpha__{bag['image_id']}"] = alpha.astype(np.float32)
            if bag["split"] not in ("train", "test"):
                continue
            if cache is None:
                cache = _read_cache([cache_path])
            mask = cache[bag["image_id"]].mask
            if mask is None:
                raise ValueError(f"{bag['image_id']} has no Part 1 mask in {cache_path}")
            mask = _working(mask, tuple(bag["shape"]), order=0) > 0
            scores = mil.block_scores(alpha, probs)
            score_map = mil.segmentation_map(
                tuple(bag["shape"]), bag["coords"].numpy(), bag["block_size"], scores
            )
            per_image[bag["image_id"]] = np.array(
                [mil.jaccard_index(score_map >= eta, mask) for eta in etas]
            )
            scores_out[f"scores__{bag['image_id']}"] = scores.astype(np.float32)
    predictions = pd.DataFrame(rows).set_index("image_id")
    if net is None:
        raise ValueError("no bags found in the feature shards")

    def mean_curve(split: str) -> np.ndarray:
        ids = [i for i in predictions.index[predictions["split"] == split] if i in per_image]
        return np.mean([per_image[i] for i in ids], axis=0) if ids else np.full(len(etas), np.nan)

    train_curve, test_curve = mean_curve("train"), mean_curve("test")
    best = int(np.nanargmax(train_curve))
    eta = float(etas[best])
    predictions["jaccard"] = [
        per_image[i][best] if i in per_image and predictions.at[i, "split"] == "test" else np.nan
        for i in predictions.index
    ]
    test = predictions[predictions["split"] == "test"]
    metrics = recognition_metrics(test)
    metrics.update({"jaccard": float(test_curve[best]), "eta": eta, "n_test": len(test)})
    logger.info("test metrics: %s", metrics)

    for path in (predictions_path, sweep_path, metrics_path, scores_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    predictions.to_csv(predictions_path)
    pd.DataFrame({"eta": etas, "train_jaccard": train_curve, "test_jaccard": test_curve}).to_csv(
        sweep_path, index=False
    )
    Path(metrics_path).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    with Path(scores_path).open("wb") as handle:
        np.savez_compressed(handle, **scores_out)
    _write_run_info(
        Path(metrics_path).parent,
        run_info,
        device=str(dev),
        eta=eta,
        adjacency=graphs.reading,
        mean_degree=graphs.mean_degree(all_bags),
    )
    return metrics


# --------------------------------------------------------------------------- tables


def _paper_values(path: str | Path, artifact: str, kind: str | None = None) -> pd.DataFrame:
    values = pd.read_csv(path, dtype={"value": str})
    values = values[values["artifact"] == artifact]
    if kind is not None:
        values = values[values["kind"] == kind]
    return values


def _class_counts(manifest: pd.DataFrame, split: str) -> dict[str, int]:
    labels = manifest.loc[manifest["split"] == split, "label"]
    return {c: int((labels == c).sum()) for c in mil.CLASSES}


def tabulate_gcn_mil(
    manifest_path: str | Path,
    split_path: str | Path,
    metrics_paths: Mapping[str, Sequence[str | Path]] | Sequence[str | Path],
    paper_values_path: str | Path,
    table_paths: Mapping[str, str | Path],
    *,
    bags: Mapping[str, Any] | BagOptions | None = None,
    model: Mapping[str, Any] | ModelOptions | None = None,
    freeze_backbone: bool = True,
    run_info: Mapping[str, Any] | None = None,
) -> None:
    """Write Tables 1–5 of the paper (``table_paths`` maps ``table01``… to CSV paths).

    ``metrics_paths`` maps each reading of Eq. 1's radius (``block``, ``stride``) to the
    metrics of its runs (a plain list is taken as ``bags.adjacency_radius``). Table 5 has one
    reproduced row per reading (mean and SD over its runs), the paper's own row (kind ``own``
    in ``paper_values_path``) and the literature rows of Tables 4 and 5 (kind ``cited``);
    the index is (Models, reading), so the scorecard finds ``GCN-based MIL(ours) / block``.
    """
    from melrepro.report.tables import write_table

    bag_opts = _options(BagOptions, bags)
    model_opts = _options(ModelOptions, model)
    manifest = _manifest_with_split(manifest_path, split_path)

    # Table 1: training counts and DR counts per class, the paper's layout (classes as columns).
    counts = mil.dr_counts(_class_counts(manifest, "train"), bag_opts.rotation_steps)
    table1 = pd.DataFrame(
        {
            "Rotation step (deg)": counts["rotation_step"],
            "Training Dataset": counts["training"],
            "DR": counts["dr"],
        }
    ).T
    table1.columns = [CLASS_TITLES[c] for c in table1.columns]
    table1.index.name = "set"
    write_table(table1, table_paths["table01"], title="Table 1: training set and DR")

    table2 = mil.layer_table(
        mil.BlockEncoder(pretrained=False),
        mil.GCNMIL(
            512, model_opts.hidden_channels, model_opts.attention_channels, len(mil.CLASSES)
        ),
    )
    write_table(table2, table_paths["table02"], title="Table 2: model structure")

    table3 = pd.DataFrame(
        {
            "Validation": _class_counts(manifest, "val"),
            "Test": _class_counts(manifest, "test"),
        }
    ).T
    table3.columns = [CLASS_TITLES[c] for c in table3.columns]
    table3.index.name = "set"
    write_table(table3, table_paths["table03"], title="Table 3: ISIC 2017 validation and test")

    columns4 = ["Naked Image Input", "End-to-end Method", "Recognition", "Segmentation"]
    cited4 = _paper_values(paper_values_path, "table04", "cited")
    table4 = cited4.pivot_table(
        index="row", columns="column", values="value", aggfunc="first", sort=False
    )
    table4 = table4.reindex(columns=columns4)
    table4["source"] = "cited"
    ours = {
        "Naked Image Input": "yes" if bag_opts.scale == 1.0 else "no",
        "End-to-end Method": "no" if freeze_backbone else "yes",
        "Recognition": "yes",
        "Segmentation": "yes",
        "source": "reproduced",
    }
    table4.loc[OUR_ROW] = ours
    table4.index.name = "Methods"
    write_table(table4, table_paths["table04"], title="Table 4: method capabilities")

    if not isinstance(metrics_paths, Mapping):
        metrics_paths = {bag_opts.adjacency_radius: list(metrics_paths)}
    runs = {
        reading: [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]
        for reading, paths in metrics_paths.items()
    }
    keys = {
        "sk_auc": "Seborrheic Keratosis-AUC",
        "auc": "AUC",
        "accuracy": "Accuracy",
        "recall": "Recall",
        "jaccard": "JA",
    }
    # Cited and paper values stay the strings the paper prints (0.840, not 0.84).
    cited5 = _paper_values(paper_values_path, "table05", "cited")
    table5 = cited5.pivot_table(
        index="row", columns="column", values="value", aggfunc="first", sort=False
    ).reindex(columns=list(keys.values()))
    table5["source"] = "cited"
    table5.index = pd.MultiIndex.from_arrays(
        [table5.index, ["cited"] * len(table5)], names=["Models", "reading"]
    )
    own5 = _paper_values(paper_values_path, "table05", "own")
    own5 = own5[own5["row"].str.startswith(OUR_ROW)].drop_duplicates("column")
    paper_row = own5.set_index("column")["value"].reindex(list(keys.values()))
    table5 = table5.astype(object)
    table5.loc[(OUR_ROW, "paper"), :] = [*paper_row.tolist(), "paper (its own result)"]
    for reading, results in runs.items():
        label = (OUR_ROW, reading)
        for key, title in keys.items():
            table5.loc[label, title] = float(np.nanmean([r[key] for r in results]))
        table5.loc[label, "source"] = (
            f"reproduced (mean of {len(results)} runs), Eq. 1 radius {ADJACENCY_TITLES[reading]}"
        )
        for key, title in keys.items():
            table5.loc[label, f"{title} SD"] = float(np.nanstd([r[key] for r in results]))
    write_table(table5, table_paths["table05"], title="Table 5: recognition and segmentation")
    _write_run_info(
        Path(table_paths["table01"]).parent,
        run_info,
        config={"bags": asdict(bag_opts), "model": asdict(model_opts)},
        n_runs={reading: len(results) for reading, results in runs.items()},
        eta_per_run={reading: [r["eta"] for r in results] for reading, results in runs.items()},
    )


# --------------------------------------------------------------------------- figures


def _images(
    manifest: pd.DataFrame,
    ids: Sequence[str],
    cache_paths: Sequence[str | Path],
    scale: float,
) -> dict[str, Any]:
    """Working-resolution image and mask of a few images, reading only their shards."""
    shards = sorted({int(manifest.at[i, "shard"]) for i in ids})
    paths = [p for p in cache_paths if any(f"shard-{s:03d}" in str(p) for s in shards)]
    cache = {}
    for path in paths:  # one shard in memory at a time; keep only the images drawn
        shard = _read_cache([path])
        cache.update({i: shard[i] for i in ids if i in shard})
        del shard
    out = {}
    for image_id in ids:
        row = manifest.loc[image_id]
        shape = _working_shape(int(row["width"]), int(row["height"]), scale)
        item = cache[image_id]
        mask = None if item.mask is None else _working(item.mask, shape, order=0) > 0
        out[image_id] = (_working(item.image, shape, order=1), mask)
    return out


def _contour_panel(ax, image, truth, prediction, title: str) -> None:
    ax.imshow(image)
    if truth is not None and truth.any():
        ax.contour(truth, levels=[0.5], colors="red", linewidths=1.2)
    if prediction.any():
        ax.contour(prediction, levels=[0.5], colors="lime", linewidths=1.2)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def plot_gcn_mil(
    manifest_path: str | Path,
    split_path: str | Path,
    cache_paths: Sequence[str | Path],
    feature_paths: Sequence[str | Path],
    predictions_path: str | Path,
    scores_path: str | Path,
    sweep_paths: Sequence[str | Path],
    metrics_path: str | Path,
    figure_paths: Mapping[str, str | Path],
    *,
    bags: Mapping[str, Any] | BagOptions | None = None,
    n_cases: int = 4,
    seed: int = 0,
    run_info: Mapping[str, Any] | None = None,
) -> None:
    """Draw Figures 2–6 (``figure_paths`` maps ``fig02``… to PNG paths).

    fig02: the block grid of a training image with one block and its Eq. 1 neighbours;
    fig03: one image and its mask per class; fig04/fig05: predicted (green) and expert (red)
    contours on test melanomas / non-melanomas (run 0, η*); fig06: training Jaccard vs η of
    every run with η* marked.
    """
    from matplotlib.patches import Rectangle

    from melrepro.report.figures import new_figure, save_figure

    bag_opts = _options(BagOptions, bags)
    manifest = _manifest_with_split(manifest_path, split_path)
    rng = np.random.default_rng(seed)
    predictions = pd.read_csv(predictions_path, index_col="image_id")
    metrics = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
    eta = float(metrics["eta"])
    bags0 = {b["image_id"]: b for b in load_bags(feature_paths, angle_zero_only=True)}

    # fig03: one training image per class, with its Part 1 mask.
    picks = {}
    for cls in mil.CLASSES:
        ids = sorted(manifest.index[(manifest["split"] == "train") & (manifest["label"] == cls)])
        if ids:
            picks[cls] = ids[int(rng.integers(len(ids)))]
    test_ids = predictions.index[predictions["split"] == "test"]
    mel = [i for i in test_ids if predictions.at[i, "label"] == "melanoma"]
    other = [i for i in test_ids if predictions.at[i, "label"] != "melanoma"]
    mel = list(rng.permutation(mel)[:n_cases]) if mel else []
    other = list(rng.permutation(other)[:n_cases]) if other else []
    # fig02 uses the largest-grid training image of the picks (the most blocks to show).
    sample = max(picks.values(), key=lambda i: len(bags0[i]["coords"]) if i in bags0 else -1)
    images = _images(manifest, sorted({*picks.values(), *mel, *other}), cache_paths, bag_opts.scale)

    # fig02
    bag = bags0[sample]
    coords, k = bag["coords"].numpy(), bag["block_size"]
    centres = mil.block_centres(coords, k)
    edges = BagGraphs(bag_opts.adjacency_radius, bag_opts.radius_factor)(bag).numpy()
    middle = int(np.argmin(np.linalg.norm(centres - centres.mean(0), axis=1)))
    neighbours = edges[1, edges[0] == middle]
    fig, axes = new_figure(1, 2, figsize=(10, 4))
    for ax in axes:
        ax.imshow(images[sample][0])
        ax.set_axis_off()
    axes[0].plot(centres[:, 1], centres[:, 0], ".", color="yellow", markersize=2)
    y, x = coords[middle]
    axes[0].add_patch(Rectangle((x, y), k, k, fill=False, edgecolor="red", linewidth=1.5))
    axes[0].set_title(
        f"{len(coords)} blocks of {k}px (stride {bag['stride']}), centres in yellow", fontsize=9
    )
    for n in neighbours:
        yy, xx = coords[n]
        axes[1].add_patch(Rectangle((xx, yy), k, k, fill=False, edgecolor="blue", linewidth=0.5))
    axes[1].add_patch(Rectangle((x, y), k, k, fill=False, edgecolor="red", linewidth=1.5))
    axes[1].set_title(
        f"{len(neighbours)} adjacent blocks, Eq. 1 radius "
        f"{ADJACENCY_TITLES[bag_opts.adjacency_radius]}",
        fontsize=9,
    )
    save_figure(fig, figure_paths["fig02"])

    # fig03
    fig, axes = new_figure(len(picks), 2, figsize=(6, 3 * len(picks)), squeeze=False)
    for r, (cls, image_id) in enumerate(picks.items()):
        image, mask = images[image_id]
        axes[r, 0].imshow(image)
        axes[r, 0].set_title(f"{CLASS_TITLES[cls]} ({image_id})", fontsize=8)
        axes[r, 1].imshow(mask if mask is not None else np.zeros(image.shape[:2]), cmap="gray")
        axes[r, 1].set_title(f"{CLASS_TITLES[cls]} segmentation mask", fontsize=8)
        for ax in axes[r]:
            ax.set_axis_off()
    save_figure(fig, figure_paths["fig03"])

    # fig04 / fig05
    with np.load(scores_path) as npz:
        scores = {
            key.split("__", 1)[1]: npz[key] for key in npz.files if key.startswith("scores__")
        }
    for fig_id, ids in (("fig04", mel), ("fig05", other)):
        n_cols = max(len(ids), 1)
        fig, axes = new_figure(1, n_cols, figsize=(3 * n_cols, 3), squeeze=False)
        for c, image_id in enumerate(ids):
            bag = bags0[image_id]
            score_map = mil.segmentation_map(
                tuple(bag["shape"]), bag["coords"].numpy(), bag["block_size"], scores[image_id]
            )
            image, mask = images[image_id]
            p = predictions.loc[image_id]
            called = mil.CLASSES[int(np.argmax([p[f"p_{c}"] for c in mil.CLASSES]))]
            _contour_panel(
                axes[0, c],
                image,
                mask,
                score_map >= eta,
                f"Case {c + 1}: {CLASS_TITLES[p['label']]}\ncalled {CLASS_TITLES[called]}, "
                f"JA={p['jaccard']:.2f}",
            )
        if not ids:
            axes[0, 0].set_axis_off()
            axes[0, 0].set_title("no test cases of this kind")
        save_figure(fig, figure_paths[fig_id])

    # fig06
    fig, ax = new_figure(figsize=(5, 3.5))
    curves = [pd.read_csv(p) for p in sweep_paths]
    for r, curve in enumerate(curves):
        ax.plot(
            curve["eta"],
            curve["train_jaccard"],
            color="0.7",
            linewidth=0.8,
            label="runs" if r == 0 else None,
        )
    mean = np.mean([c["train_jaccard"] for c in curves], axis=0)
    ax.plot(curves[0]["eta"], mean, color="black", label="mean of runs")
    ax.axvline(eta, color="red", linestyle="--", label=f"chosen η = {eta:.2f} (run 0)")
    ax.set_xlabel("threshold η")
    ax.set_ylabel("mean Jaccard, training set")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8)
    save_figure(fig, figure_paths["fig06"])
    _write_run_info(
        Path(figure_paths["fig02"]).parent,
        run_info,
        config={"bags": asdict(bag_opts), "n_cases": n_cases},
        eta=eta,
        sample_image=sample,
        fig04_cases=mel,
        fig05_cases=other,
    )
