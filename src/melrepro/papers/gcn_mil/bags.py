"""Feature shards -> bags ready for the GCN-MIL head: loading, Eq. 1 graphs, batches, moments.

Files are memory-mapped (float16 features paged in per batch and cast on the device); each
grid's Eq. 1 graph is rebuilt once at load for the reading of its radius.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from melrepro.methods import mil
from melrepro.papers.gcn_mil.features import FEATURE_FORMAT, is_zero_bag


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
            if angle_zero_only and not is_zero_bag(bag):
                continue
            bag["coords"] = grids[bag["grid"]]
            out.append(bag)
    return out


def permute_training_labels(bags: Sequence[dict[str, Any]], seed: int) -> dict[str, str]:
    """Give every image's bags the label of another training image (the label-shuffled control).

    One seeded permutation of the image-level labels (images in sorted id order), so all DR
    copies and views of an image keep one label and the class counts stay the same. Changes
    ``bags`` in place; returns ``{image_id: new label}``.
    """
    labels = {}
    for bag in bags:
        labels.setdefault(bag["image_id"], bag["label"])
    ids = sorted(labels)
    order = np.random.default_rng([seed, 20]).permutation(len(ids))
    permuted = {image: labels[ids[j]] for image, j in zip(ids, order, strict=True)}
    for bag in bags:
        bag["label"] = permuted[bag["image_id"]]
    return permuted


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


def collate(bags: Sequence[Mapping[str, Any]], graphs: BagGraphs, dev: torch.device):
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
