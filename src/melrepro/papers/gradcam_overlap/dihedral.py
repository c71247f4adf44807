"""TIML's ``hflip_rot4`` expansion as a view: every image in its 8 flips and quarter turns,
computed when an item is read, never stored.

The eightfold copies the expansion used to store held 8 x (train + val) images in memory (about
112 GB for VGG16 at 450 px on ISIC 2019, benchmarks/bench_resources.py); the view holds the
images once and hands the model the same samples in the same order (tests/test_gradcam_overlap.py
compares it with the copying construction, item by item and by the trained weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from melrepro.methods.training import ArrayDataset

__all__ = ["DihedralViews", "N_VIEWS", "dihedral_view"]

#: Orientations per image: no flip / horizontal flip, each turned 0, 1, 2, 3 quarter turns.
N_VIEWS = 8


def dihedral_view(image: torch.Tensor, view: int) -> torch.Tensor:
    """A (C, H, W) image in orientation ``view`` (0..7): flipped left-right when ``view >= 4``,
    then turned ``view % 4`` quarter turns (numpy's ``rot90(hwc[:, ::-1], k)`` on the HWC image).
    """
    if view >= 4:
        image = torch.flip(image, dims=(2,))
    return torch.rot90(image, view % 4, dims=(1, 2))


class _ViewedImages(Sequence):
    """Item ``i`` of the expanded set: image ``i // 8`` in orientation ``i % 8``."""

    def __init__(self, images: Sequence[torch.Tensor]) -> None:
        self.images = images

    def __len__(self) -> int:
        return N_VIEWS * len(self.images)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} of {len(self)}")
        return dihedral_view(self.images[i // N_VIEWS], i % N_VIEWS)


class DihedralViews(ArrayDataset):
    """An :class:`ArrayDataset` of ``8 N`` items over ``N`` images held once.

    It stays an ``ArrayDataset`` so the training core treats it as before: the checkpoint
    fingerprint hashes the same 8 N images (a checkpoint of the copying construction resumes),
    and batch-norm recalibration and device augmentation see the same items.
    """

    def __init__(self, images: np.ndarray | Sequence[np.ndarray], labels: np.ndarray) -> None:
        super().__init__(images, labels)
        self.images = _ViewedImages(self.images)  # type: ignore[assignment]
        self.labels = np.repeat(self.labels, N_VIEWS)
        self.metadata = torch.zeros((len(self.labels), 0))
