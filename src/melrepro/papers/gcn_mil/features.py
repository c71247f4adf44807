"""Cache shard -> bags and their frozen ResNet18 block features (``extract_gcn_mil_features``).

Training images get one bag per DR rotation angle of their class (Table 1) and dihedral view;
validation and test images one bag (0°). The backbone is frozen and its block features are
cached per shard (float16); edges are not stored (:mod:`melrepro.papers.gcn_mil.bags` rebuilds
them per grid at load).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from melrepro.methods import mil
from melrepro.methods.devices import choose_device
from melrepro.papers.gcn_mil.common import (
    atomic_torch_save,
    manifest_with_split,
    read_cache,
    to_working,
    working_shape,
    write_run_info_file,
)
from melrepro.papers.gcn_mil.options import BagOptions, as_options

# The paper's one logger (its log lines name it, as before the package split).
logger = logging.getLogger("melrepro.papers.gcn_mil")

#: Version of the feature-file layout written by :func:`extract_gcn_mil_features`.
FEATURE_FORMAT = 2


def is_zero_bag(bag: Mapping[str, Any]) -> bool:
    """Whether a bag is the image itself: 0°, no flip or quarter turn."""
    return bag["angle"] == 0.0 and bag.get("view", 0) == 0


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


def _frozen_encoder(pretrained: bool, seed: int, dev: torch.device) -> mil.BlockEncoder:
    """The backbone, built from ``seed`` so every shard gets the same random weights."""
    torch.manual_seed(seed)
    encoder = mil.BlockEncoder(pretrained=pretrained).to(dev).eval()
    if dev.type == "cuda":
        encoder = encoder.to(memory_format=torch.channels_last)
    return encoder


def _grid_corners(
    grids: dict[tuple[int, int, int, int], torch.Tensor],
    view_shape: tuple,
    k: int,
    stride: int,
    cover_edges: bool,
) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The grid key of a view and its block corners, made once per grid into ``grids``."""
    key = (*view_shape, k, stride)
    if key not in grids:
        coords = mil.block_grid(*view_shape, block_size=k, stride=stride, cover_edges=cover_edges)
        grids[key] = torch.from_numpy(coords.astype(np.int32))
    return key, grids[key].numpy()


def _encode_blocks(encoder, oriented, coords, k: int, options: BagOptions, on_device, dev):
    """Float16 (N, 512) features of the blocks at ``coords`` of one oriented image, on the CPU."""
    chunks = []
    with torch.inference_mode(), _autocast(options, dev):
        if on_device:
            for batch in mil.tensor_block_batches(oriented, coords, k, options.batch_size):
                chunks.append(encoder(batch, channels_first=True).to(torch.float16))
        else:
            for batch in mil.block_batches(oriented, coords, k, options.batch_size):
                out = encoder(torch.from_numpy(batch).to(dev, non_blocking=True))
                chunks.append(out.to(torch.float16))
    return torch.cat(chunks).cpu()


def _image_bags(
    image_id: str,
    row: pd.Series,
    cached: np.ndarray,
    cache_path,
    options: BagOptions,
    encoder,
    grids: dict,
    on_device: bool,
    dev: torch.device,
) -> tuple[list[dict[str, Any]], int]:
    """All the bags of one image (DR angles x views for training, 0° otherwise), block count."""
    label, split = str(row["label"]), str(row["split"])
    shape = working_shape(int(row["width"]), int(row["height"]), options.scale)
    _check_cache_resolution(image_id, cache_path, cached.shape[:2], shape)
    image = to_working(cached, shape, order=1)
    k = options.working_block_size
    stride = options.working_stride(int(row["height"]))
    angles = mil.rotation_angles(options.rotation_steps[label]) if split == "train" else [0.0]
    views = range(options.dihedral_views) if split == "train" else range(1)
    records, n_blocks = [], 0
    for angle, view, oriented in _bag_views(image, angles, views, on_device, dev):
        view_shape = tuple(oriented.shape[-2:] if on_device else oriented.shape[:2])
        key, coords = _grid_corners(grids, view_shape, k, stride, options.cover_edges)
        features = _encode_blocks(encoder, oriented, coords, k, options, on_device, dev)
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
                "features": features,
            }
        )
    return records, n_blocks


def _save_feature_files(
    header: Mapping[str, Any],
    grids: Mapping[Any, torch.Tensor],
    records: list[dict[str, Any]],
    output_path: Path,
    zero_path: str | Path | None,
) -> None:
    """The shard's feature file and, when asked, its 0°-only copy (with only the grids it uses)."""
    atomic_torch_save({**header, "grids": grids, "bags": records}, output_path)
    if zero_path is not None:
        zero = [r for r in records if is_zero_bag(r)]
        used = {r["grid"] for r in zero}
        atomic_torch_save(
            {**header, "grids": {g: c for g, c in grids.items() if g in used}, "bags": zero},
            Path(zero_path),
        )


def _shard_bags(cache, manifest, cache_path, options: BagOptions, encoder, on_device: bool, dev):
    """The bags of every image of a shard in the manifest split, their grids, the block count
    and the rate (blocks per second), logged."""
    k = options.working_block_size
    records: list[dict[str, Any]] = []
    grids: dict[tuple[int, int, int, int], torch.Tensor] = {}
    n_blocks, started = 0, time.perf_counter()
    for image_id in sorted(cache):
        if image_id not in manifest.index or pd.isna(manifest.at[image_id, "split"]):
            logger.warning("%s is in the cache but not in the manifest split; skipped", image_id)
            continue
        row = manifest.loc[image_id]
        image_records, image_blocks = _image_bags(
            image_id,
            row,
            cache[image_id].image,
            cache_path,
            options,
            encoder,
            grids,
            on_device,
            dev,
        )
        records.extend(image_records)
        n_blocks += image_blocks
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
    return records, grids, n_blocks, rate


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
    so every shard uses the same random weights when ``pretrained`` is false. (Why this long:
    its parameters and this docstring only; the steps are the helpers above.)

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
        (:class:`melrepro.papers.gcn_mil.bags.BagGraphs`).
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
    options = as_options(BagOptions, bags)
    torch.set_num_threads(max(1, threads))
    dev = choose_device(device)
    on_device = _feature_device_path(options, dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    manifest = manifest_with_split(manifest_path, split_path)
    cache = read_cache([cache_path])
    encoder = _frozen_encoder(pretrained, seed, dev)
    records, grids, n_blocks, rate = _shard_bags(
        cache, manifest, cache_path, options, encoder, on_device, dev
    )
    k = options.working_block_size
    data_path = "tensor" if on_device else "numpy"
    output_path = Path(output_path)
    header = {"format": FEATURE_FORMAT, "options": asdict(options), "weights": encoder.weights_name}
    _save_feature_files(header, grids, records, output_path, zero_path)
    write_run_info_file(
        Path(run_info_path or output_path.with_name(f"{output_path.stem}_run_info.json")),
        run_info,
        config={"bags": asdict(options), "pretrained": pretrained},
        weights=encoder.weights_name,
        device=str(dev),
        working_block_size=k,
        scale=options.scale,
        data_path=data_path,
        blocks_per_second=rate,
        n_bags=len(records),
        n_blocks=n_blocks,
    )
    return output_path
