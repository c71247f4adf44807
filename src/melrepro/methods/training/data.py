"""Data of a training run: in-memory datasets, samplers to a class mix, the training loader
built once per run (seeded per epoch, per-item seeds with workers), the evaluation loader,
batches to the device, augmentation on the device, and the data fingerprint of a checkpoint."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, WeightedRandomSampler

from melrepro.methods.devices import choose_device
from melrepro.methods.training.options import TrainOptions

__all__ = [
    "ArrayDataset",
    "RawImages",
    "SeededItems",
    "TrainLoader",
    "augment_on_device",
    "augments_on_device",
    "make_class_sampler",
    "make_sampler",
]

logger = logging.getLogger(__name__)


class ArrayDataset(Dataset):
    """In-memory images (decoded once) with labels and optional metadata.

    Parameters
    ----------
    images : (N, H, W, 3) uint8 ndarray or sequence of (H, W, 3) uint8 arrays
    labels : (N,) int array
    transform : callable, optional
        Maps a (3, H, W) uint8 tensor to a float tensor (augmentation + normalisation).
    metadata : (N, M) float array, optional

    Items are ``(image, label, metadata)``; ``metadata`` is an empty tensor when absent.
    """

    def __init__(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        labels: np.ndarray,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        metadata: np.ndarray | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if metadata is not None and len(metadata) != len(labels):
            raise ValueError(f"{len(metadata)} metadata rows but {len(labels)} labels")
        self.images = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1) for im in images]
        self.labels = np.asarray(labels).astype(np.int64)
        self.transform = transform
        self.metadata = (
            torch.zeros((len(labels), 0))
            if metadata is None
            else torch.as_tensor(np.asarray(metadata, dtype=np.float32))
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        x = self.images[i]
        x = self.transform(x) if self.transform is not None else x.to(torch.float32) / 255.0
        return x, int(self.labels[i]), self.metadata[i]


class RawImages(Dataset):
    """An :class:`ArrayDataset` seen without its transform: ``(uint8 image, label, metadata)``,
    for augmentation on the device (the loader then only collates uint8 tensors)."""

    def __init__(self, dataset: ArrayDataset) -> None:
        self.dataset = dataset
        self.labels = dataset.labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        return self.dataset.images[i], int(self.labels[i]), self.dataset.metadata[i]


def make_class_sampler(
    labels: np.ndarray,
    *,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> WeightedRandomSampler:
    """Sample with replacement so that each of the K classes present is drawn equally often.

    Weights are ``1 / (K n_c)`` for an image of class c (probabilities sum to 1).
    """
    labels = np.asarray(labels)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    w = 1.0 / (len(classes) * counts[inverse])
    return WeightedRandomSampler(
        torch.as_tensor(w, dtype=torch.double),
        num_samples=len(labels) if num_samples is None else num_samples,
        replacement=True,
        generator=generator,
    )


def make_sampler(
    labels: np.ndarray,
    positive_fraction: float,
    *,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> WeightedRandomSampler:
    """Sample with replacement so that ``positive_fraction`` of the draws are label 1.

    Weights are ``f / p`` for positives and ``(1 - f) / (1 - p)`` for negatives, with ``p``
    the positive share of ``labels`` (as the paper's code does for its 60/40 mix).

    Parameters
    ----------
    labels : (N,) array of {0, 1}
    positive_fraction : float in (0, 1)
    num_samples : int, optional
        Draws per epoch (default ``N``).
    generator : torch.Generator, optional
    """
    labels = np.asarray(labels)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f"make_sampler is binary (labels 0/1), got labels {sorted(set(labels.tolist()))[:10]}; "
            "use make_class_sampler for K classes"
        )
    p = labels.mean()
    if p in (0.0, 1.0):
        raise ValueError("weighted sampling needs both classes in the training labels")
    w = np.where(labels == 1, positive_fraction / p, (1 - positive_fraction) / (1 - p))
    return WeightedRandomSampler(
        torch.as_tensor(w, dtype=torch.double),
        num_samples=len(labels) if num_samples is None else num_samples,
        replacement=True,
        generator=generator,
    )


def _index_sampler(
    dataset: Dataset, labels: np.ndarray | None, options: TrainOptions, generator: torch.Generator
) -> Sampler:
    """The training order: a target class mix, K balanced classes, or a plain shuffle."""
    if options.sampler_positive_fraction is not None:
        return make_sampler(labels, options.sampler_positive_fraction, generator=generator)
    if options.sampler_class_balanced:
        return make_class_sampler(labels, generator=generator)
    return RandomSampler(dataset, generator=generator)


class SeededItems(Dataset):
    """``dataset`` indexed by ``(item_seed, index)``: the item's random augmentation is drawn
    from its own seed, so a batch comes out the same whichever worker loads it and however
    many epochs that worker has lived (persistent workers)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, torch.Tensor]:
        item_seed, index = key
        # fork_rng: a main-process caller's global stream is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed)
            return self.dataset[index]


class _ItemSeeds(Sampler):
    """Tags every index of ``sampler`` with the seed of its position in the epoch."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.epoch_seed = 0

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for position, index in enumerate(self.sampler):
            yield (self.epoch_seed * 1_000_003 + position) % 2**63, int(index)


class TrainLoader:
    """The training loader of a whole run, built once; ``loader.epoch(seed)`` iterates one epoch.

    In the main process (``num_workers=0``) the loader's one generator is re-seeded before every
    epoch, which draws exactly what a loader built per epoch from that seed drew before (the
    default runs did not move). With workers, the workers live for the whole run
    (``persistent_workers``), the sampler draws from its own generator, re-seeded per epoch, and
    every item is augmented from its own seed (:class:`SeededItems`): the result does not depend
    on the number of workers, and a resumed run replays an uninterrupted one.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        options: TrainOptions,
        labels: np.ndarray | None = None,
    ) -> None:
        self.generator = torch.Generator()
        workers = options.num_workers
        sampler = _index_sampler(dataset, labels, options, self.generator)
        self.item_seeds: _ItemSeeds | None = None
        if workers and getattr(dataset, "transform", None) is not None:
            self.item_seeds = _ItemSeeds(sampler)
            sampler, dataset = self.item_seeds, SeededItems(dataset)
        n = len(dataset)
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            # Workers' base seeds come from the loader's generator: keep them off the sampler's
            # stream, which a persistent loader does not redraw every epoch.
            generator=torch.Generator() if workers else self.generator,
            num_workers=workers,
            persistent_workers=workers > 0,
            # BatchNorm cannot train on a last batch of one sample.
            # DEVIATION: the papers' loaders (PyTorch and Keras defaults) keep the last partial batch -> it is
            # dropped when the set is larger than a batch, since BatchNorm cannot train on a batch of one.
            drop_last=n > batch_size,
            pin_memory=_pin_memory(options),
            worker_init_fn=_one_thread if workers else None,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, seed: int):
        """An iterator over one epoch drawn from ``seed``."""
        self.generator.manual_seed(seed)
        if self.item_seeds is not None:
            self.item_seeds.epoch_seed = seed
        return iter(self.loader)


def _pin_memory(options: TrainOptions) -> bool:
    return options.device != "cpu" and torch.cuda.is_available()


def _eval_loader(dataset: Dataset, batch_size: int, options: TrainOptions) -> DataLoader:
    """In order, every image; workers persist when the loader is reused (validation)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=options.num_workers,
        persistent_workers=options.num_workers > 0,
        pin_memory=_pin_memory(options),
        worker_init_fn=_one_thread if options.num_workers else None,
    )


def _one_thread(_worker_id: int) -> None:
    """Loader workers run one torch thread each (the rule's threads are shared out)."""
    torch.set_num_threads(1)


def _to_device(
    x: torch.Tensor, y: torch.Tensor, meta: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch to ``device``: asynchronous copies from pinned memory and channels_last on CUDA."""
    if device.type != "cuda":
        return x.to(device), y.to(device), meta.to(device)
    x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True), meta.to(device, non_blocking=True)


def augment_on_device(
    x: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Apply a per-image ``transform`` (``torchvision.transforms.v2`` on tensors) to a uint8
    batch already on its device: each image gets its own random draw, as in a loader worker,
    but the pixel work runs on the GPU and the CPU only launches it."""
    out = torch.stack([transform(image) for image in x])
    return out.contiguous(memory_format=torch.channels_last) if x.is_cuda else out


def augments_on_device(augment_on: str, device: str) -> bool:
    """Whether a recipe's per-image augmentation runs on the training device.

    ``augment_on``: ``"loader"`` (CPU, in the loader), ``"device"`` (on the device from uint8
    batches, :func:`augment_on_device`), or ``"auto"``: on the device when it is a GPU, where the
    loader's CPU cost per image would otherwise starve it (benchmarks/bench_training.py).
    """
    if augment_on not in ("auto", "loader", "device"):
        raise ValueError(f"augment_on={augment_on!r} is not one of ['auto', 'loader', 'device']")
    if augment_on == "auto":
        return choose_device(device).type == "cuda"
    return augment_on == "device"


def _data_fingerprint(*datasets: Dataset) -> str:
    """Hash of the training and validation data, so a checkpoint is never reused on new data.

    ArrayDatasets are hashed fully (labels, metadata, every image's bytes); other datasets only
    by length, which is logged as a warning.
    """
    h = hashlib.blake2b(digest_size=8)
    for ds in datasets:
        if isinstance(ds, ArrayDataset):
            h.update(ds.labels.tobytes())
            h.update(ds.metadata.numpy().tobytes())
            for image in ds.images:
                h.update(image.contiguous().numpy().tobytes())
        else:
            logger.warning("%s is not an ArrayDataset: only its length identifies it", type(ds))
            h.update(str(len(ds)).encode())
    return h.hexdigest()
