"""GCN-based multi-instance learning on image blocks: bags, graphs, model and attention segmentation.

Reproduces the method of the ``gcn_mil`` paper: each dermoscopy image is a bag of k×k blocks
taken with a height-dependent stride (Eq. 4), blocks whose centres are at most √2·k apart are
adjacent (Eq. 1), a ResNet18 embeds every block, two GCN layers and attention pooling (Ilse et
al.) turn the bag into a class-probability vector, and the attention weights calibrated by that
vector give a lesion segmentation (Eq. 3).

References
----------
.. [1] GCN-based MIL for melanoma recognition and lesion segmentation (paper ``gcn_mil``),
   §2.2 (Eq. 1, Table 2), §2.3 (Eq. 3), §3.1 (Eq. 4, Tables 1 and 3).
.. [2] M. Ilse, J. Tomczak, M. Welling, "Attention-based deep multiple instance learning",
   ICML 2018.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from numpy.lib.stride_tricks import sliding_window_view
from scipy.spatial import cKDTree
from torch import nn
from torch_geometric.nn import GCNConv, global_add_pool
from torch_geometric.utils import softmax as segment_softmax
from torch_geometric.utils import to_torch_csr_tensor

logger = logging.getLogger(__name__)

__all__ = [
    "CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BlockEncoder",
    "GCNMIL",
    "ADJACENCY_READINGS",
    "adjacency_unit",
    "block_adjacency",
    "block_batches",
    "dihedral_tensor",
    "rotate_tensor",
    "tensor_block_batches",
    "block_centres",
    "block_grid",
    "block_scores",
    "best_threshold_jaccard",
    "block_fractions",
    "everything_jaccard",
    "oracle_block_jaccard",
    "dihedral",
    "dr_counts",
    "jaccard_index",
    "layer_table",
    "rotate_image",
    "rotation_angles",
    "segmentation_map",
    "stride_for_height",
    "threshold_sweep",
]

#: The three ISIC 2017 classes, in the order of the model's outputs.
CLASSES: tuple[str, ...] = ("melanoma", "seborrheic_keratosis", "nevus")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The two readings of Eq. 1's radius √2·k: ``block`` takes k literally as the block side (the
#: paper's symbol), ``stride`` as the grid step s (8-neighbour adjacency on the block grid).
ADJACENCY_READINGS: tuple[str, ...] = ("block", "stride")


# --------------------------------------------------------------------------- bags and graphs


def stride_for_height(
    height: int,
    *,
    strides: Sequence[int] = (50, 120, 200),
    height_bounds: Sequence[int] = (1000, 2000),
) -> int:
    """Sliding-window stride for an image of the given original height (Eq. 4).

    Parameters
    ----------
    height : int
        Original image height in pixels.
    strides : sequence of int, length len(height_bounds) + 1
        Stride for each height band; the paper uses 50, 120 and 200.
    height_bounds : sequence of int, increasing
        Band limits; ``h < 1000`` uses ``strides[0]``, ``1000 <= h < 2000`` uses
        ``strides[1]``, otherwise ``strides[2]``.

    Returns
    -------
    int
        The stride s.

    Raises
    ------
    ValueError
        If the lengths do not match, the bounds are not increasing, or ``height < 1``.
    """
    if len(strides) != len(height_bounds) + 1:
        raise ValueError(
            f"need one more stride than height bounds, got {len(strides)} strides and "
            f"{len(height_bounds)} bounds"
        )
    if list(height_bounds) != sorted(height_bounds):
        raise ValueError(f"height_bounds must be increasing, got {list(height_bounds)}")
    if height < 1:
        raise ValueError(f"height must be positive, got {height}")
    band = int(np.searchsorted(np.asarray(height_bounds), height, side="right"))
    return int(strides[band])


def _positions(length: int, block_size: int, stride: int, cover_edges: bool) -> np.ndarray:
    last = max(length - block_size, 0)
    pos = np.arange(0, last + 1, stride, dtype=np.int64)
    if cover_edges and pos[-1] != last:
        pos = np.append(pos, last)
    return pos


def block_grid(
    height: int, width: int, *, block_size: int, stride: int, cover_edges: bool = False
) -> np.ndarray:
    """Top-left corners of the k×k sliding-window blocks of an image.

    Parameters
    ----------
    height, width : int
        Image size in pixels (an image smaller than ``block_size`` gets one block per
        short side, placed at 0; :func:`block_batches` pads it).
    block_size : int
        Block side k (224 in the paper).
    stride : int
        Window stride s (see :func:`stride_for_height`).
    cover_edges : bool, optional
        Add a last row/column of blocks flush with the bottom/right border when the stride
        does not land there. The paper's sliding window does not (default ``False``).

    Returns
    -------
    (N, 2) int64 ndarray
        ``(y, x)`` of each block's top-left pixel, row-major order.
    """
    if block_size < 1 or stride < 1:
        raise ValueError(f"block_size and stride must be positive, got {block_size}, {stride}")
    ys = _positions(height, block_size, stride, cover_edges)
    xs = _positions(width, block_size, stride, cover_edges)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


def block_centres(coords: np.ndarray, block_size: int) -> np.ndarray:
    """Centre of each block, in the continuous pixel coordinates of the paper's Eq. 1.

    Parameters
    ----------
    coords : (N, 2) ndarray
        Top-left corners from :func:`block_grid`.
    block_size : int
        Block side k.

    Returns
    -------
    (N, 2) float64 ndarray
    """
    return np.asarray(coords, dtype=np.float64) + block_size / 2.0


def adjacency_unit(reading: str, block_size: int, stride: int) -> int:
    """Length that Eq. 1's radius √2·k is measured in, for one reading of ``k``.

    Eq. 1 writes the radius as √2·k with k the block side, which links every pair of
    blocks whose centres are up to √2·224 px apart: at stride 50 that is ~80 neighbours per
    block, ~45 % of a 1022×767 bag, and two GCN layers then smooth attention over most of the
    bag. Read with k as the grid step s, √2·s links each block to its 8 grid neighbours, the
    usual image-grid graph. The paper's Fig. 2 draws neither case unambiguously.

    Parameters
    ----------
    reading : {"block", "stride"}
        ``block`` (literal: k is the block side) or ``stride`` (k read as the stride s).
    block_size, stride : int
        Block side k and grid stride s, in working pixels.

    Returns
    -------
    int
        ``block_size`` or ``stride``.
    """
    if reading == "block":
        return int(block_size)
    if reading == "stride":
        return int(stride)
    raise ValueError(f"unknown adjacency_radius {reading!r}; choose one of {ADJACENCY_READINGS}")


def block_adjacency(
    centres: np.ndarray,
    block_size: int,
    *,
    radius_factor: float = math.sqrt(2),
    dtype: type = np.int64,
) -> np.ndarray:
    """Edges of the bag graph: blocks whose centres are at most √2·k apart (Eq. 1).

    Eq. 1 sets ``A_mn = 1`` when ``||y_m - y_n|| <= √2 k``, which includes ``m = n``; the
    self-loops are left out here because :class:`torch_geometric.nn.GCNConv` adds them.

    Parameters
    ----------
    centres : (N, 2) ndarray
        Block centres.
    block_size : int
        The length unit k of the radius: the block side in the literal reading, the stride
        in the other (see :func:`adjacency_unit`).
    radius_factor : float, optional
        Multiplier of k (√2 in the paper).
    dtype : numpy integer type, optional
        Index type (int64 for torch-geometric; int32 to store a graph compactly).

    Returns
    -------
    (2, E) ndarray of ``dtype``
        Both directions of every edge, sorted by source then target.
    """
    centres = np.asarray(centres, dtype=np.float64)
    radius = radius_factor * block_size
    # A relative tolerance so that exact diagonal neighbours (distance == √2 k) are kept
    # despite the rounding of √2.
    pairs = cKDTree(centres).query_pairs(radius * (1 + 1e-9), output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros((2, 0), dtype=dtype)
    both = np.concatenate([pairs, pairs[:, ::-1]], axis=0).astype(dtype)
    order = np.lexsort((both[:, 1], both[:, 0]))
    return both[order].T.copy()


def block_batches(
    image: np.ndarray, coords: np.ndarray, block_size: int, batch_size: int
) -> Iterator[np.ndarray]:
    """Yield the blocks of an image, ``batch_size`` at a time, without copying them all.

    The blocks are read through a strided view of the image, so at any moment only the
    image and one batch of blocks are in memory (not N blocks of k×k×3 each).

    Parameters
    ----------
    image : (H, W, C) ndarray
        The image; padded (edge mode) to at least k on each side if smaller.
    coords : (N, 2) ndarray
        Top-left corners from :func:`block_grid`.
    block_size : int
        Block side k.
    batch_size : int
        Blocks per yielded array.

    Yields
    ------
    (B, k, k, C) ndarray
        A contiguous copy of up to ``batch_size`` blocks, in the order of ``coords``.
    """
    pad_h = max(block_size - image.shape[0], 0)
    pad_w = max(block_size - image.shape[1], 0)
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    windows = sliding_window_view(image, (block_size, block_size), axis=(0, 1))
    coords = np.asarray(coords)
    for start in range(0, len(coords), batch_size):
        ys, xs = coords[start : start + batch_size].T
        # windows[ys, xs] has shape (B, C, k, k): fancy indexing copies just this batch.
        yield np.ascontiguousarray(windows[ys, xs].transpose(0, 2, 3, 1))


# --------------------------------------------------------------------------- DR balancing


def rotation_angles(step: float) -> np.ndarray:
    """Rotation angles of the DR set for a class rotated every ``step`` degrees.

    Parameters
    ----------
    step : float
        Angle step in degrees (18 for melanoma and seborrheic keratosis, 45 for nevus).

    Returns
    -------
    ndarray
        ``0, step, 2 step, ...`` below 360 (20 angles for 18°, 8 for 45°).
    """
    if not 0 < step <= 360:
        raise ValueError(f"rotation step must be in (0, 360], got {step}")
    return np.arange(0.0, 360.0 - 1e-9, step)


def dr_counts(class_counts: Mapping[str, int], steps: Mapping[str, float]) -> pd.DataFrame:
    """Training counts before and after rotation balancing (the paper's Table 1).

    Parameters
    ----------
    class_counts : mapping of class -> int
        Training images per class.
    steps : mapping of class -> float
        Rotation step per class in degrees.

    Returns
    -------
    DataFrame
        Index = class; columns ``rotation_step``, ``rotations``, ``training``, ``dr``.
    """
    rows = []
    for name, count in class_counts.items():
        if name not in steps:
            raise ValueError(f"no rotation step for class {name!r}; have {sorted(steps)}")
        n_rot = len(rotation_angles(steps[name]))
        rows.append(
            {
                "class": name,
                "rotation_step": float(steps[name]),
                "rotations": n_rot,
                "training": int(count),
                "dr": int(count) * n_rot,
            }
        )
    return pd.DataFrame(rows).set_index("class")


def rotate_image(image: np.ndarray, angle: float, *, order: int = 1) -> np.ndarray:
    """Rotate an image about its centre by ``angle`` degrees, keeping its size and dtype.

    180° is an exact flip; other angles use :func:`scipy.ndimage.rotate` with mirrored
    borders (so no artificial black corners end up in blocks), which writes straight into an
    output of the input's dtype: peak memory stays at one extra image, where converting a
    6688×4439 image to float first would need eight.

    Parameters
    ----------
    image : (H, W[, C]) ndarray
    angle : float
        Degrees, counter-clockwise.
    order : int, optional
        Interpolation order (1 for images, 0 for masks).

    Returns
    -------
    ndarray
        Same shape and dtype as ``image``.
    """
    angle = float(angle) % 360.0
    if angle == 0.0:
        return image
    if angle == 180.0:
        return np.ascontiguousarray(image[::-1, ::-1])
    from scipy.ndimage import rotate

    return rotate(image, angle, axes=(1, 0), reshape=False, order=order, mode="mirror")


def dihedral(image: np.ndarray, view: int) -> np.ndarray:
    """One of the 8 flips / 90° rotations of an image (the training augmentation of §2.1).

    Parameters
    ----------
    image : (H, W[, C]) ndarray
    view : int in 0..7
        ``view % 4`` quarter turns counter-clockwise, after a left-right flip when
        ``view >= 4``; 0 is the image itself.

    Returns
    -------
    ndarray
        A view of ``image`` (no copy), (W, H[, C]) for odd quarter turns.
    """
    if not 0 <= view < 8:
        raise ValueError(f"dihedral view must be in 0..7, got {view}")
    return np.rot90(image[:, ::-1] if view >= 4 else image, view % 4)


# --------------------------------------------------------------------------- the same on tensors


def rotate_tensor(image: torch.Tensor, angle: float) -> torch.Tensor:
    """:func:`rotate_image` on a ``(C, H, W)`` tensor, on whatever device it lives on.

    torchvision's :func:`~torchvision.transforms.v2.functional.rotate` fills the corners with a
    constant; to keep :func:`rotate_image`'s mirrored borders the image is reflect-padded by
    enough that no output pixel maps outside it, rotated bilinearly and cropped back. 180° is
    an exact flip. uint8 in, uint8 out.
    """
    from torchvision.transforms.v2 import functional as tvf

    angle = float(angle) % 360.0
    if angle == 0.0:
        return image
    if angle == 180.0:
        return torch.flip(image, dims=(-2, -1))
    height, width = image.shape[-2:]
    theta = math.radians(angle)
    c, s = abs(math.cos(theta)), abs(math.sin(theta))
    # Half-extent of the rotated output box, in input coordinates, minus the input's own.
    pad_y = math.ceil(max((s * width + c * height - height) / 2, 0)) + 2
    pad_x = math.ceil(max((c * width + s * height - width) / 2, 0)) + 2
    # Reflect padding needs pad < size; pad again if one pass is not enough (very thin images).
    padded = image.float()
    while pad_y > 0 or pad_x > 0:
        py = min(pad_y, padded.shape[-2] - 1)
        px = min(pad_x, padded.shape[-1] - 1)
        padded = torch.nn.functional.pad(padded[None], (px, px, py, py), mode="reflect")[0]
        pad_y, pad_x = pad_y - py, pad_x - px
    rotated = tvf.rotate(padded, angle, interpolation=tvf.InterpolationMode.BILINEAR)
    out = tvf.center_crop(rotated, [height, width])
    return out.round_().clamp_(0, 255).to(image.dtype)


def dihedral_tensor(image: torch.Tensor, view: int) -> torch.Tensor:
    """:func:`dihedral` on a ``(C, H, W)`` tensor (``horizontal_flip``, then quarter turns)."""
    from torchvision.transforms.v2 import functional as tvf

    if not 0 <= view < 8:
        raise ValueError(f"dihedral view must be in 0..7, got {view}")
    if view >= 4:
        image = tvf.horizontal_flip(image)
    return torch.rot90(image, view % 4, dims=(-2, -1))


def tensor_block_batches(
    image: torch.Tensor, coords: np.ndarray | torch.Tensor, block_size: int, batch_size: int
) -> Iterator[torch.Tensor]:
    """:func:`block_batches` on a ``(C, H, W)`` tensor, through :meth:`torch.Tensor.unfold`.

    ``image.unfold`` twice is a strided view of every k×k window (no copy); indexing it with a
    batch of top-left corners gathers just that batch, on the image's device.

    Yields
    ------
    (B, C, k, k) tensor
        Channels first, ``image.dtype``.
    """
    pad_h = max(block_size - image.shape[-2], 0)
    pad_w = max(block_size - image.shape[-1], 0)
    if pad_h or pad_w:
        image = torch.nn.functional.pad(
            image[None].float(), (0, pad_w, 0, pad_h), mode="replicate"
        )[0].to(image.dtype)
    windows = image.unfold(1, block_size, 1).unfold(2, block_size, 1)  # (C, H', W', k, k)
    coords = torch.as_tensor(np.asarray(coords), dtype=torch.long, device=image.device)
    for start in range(0, len(coords), batch_size):
        ys, xs = coords[start : start + batch_size].T
        yield windows[:, ys, xs].transpose(0, 1)


# --------------------------------------------------------------------------- models


class BlockEncoder(nn.Module):
    """ResNet18 trunk (layers 1–18 of Table 2) mapping uint8 blocks to 512-d vectors.

    Input ``(B, k, k, 3)`` uint8 (channels last, as blocks come out of
    :func:`block_batches`); output ``(B, 512)`` float32. ImageNet normalisation is applied
    inside, so the cached features do not depend on who called it.

    Parameters
    ----------
    pretrained : bool
        Load torchvision's ``ResNet18_Weights.IMAGENET1K_V1`` (needs the weights in the
        torch hub cache or the network; never falls back to random weights).
    """

    def __init__(self, pretrained: bool = False) -> None:
        super().__init__()
        from torchvision.models import ResNet18_Weights, resnet18

        weights = ResNet18_Weights.IMAGENET1K_V1 if pretrained else None
        trunk = resnet18(weights=weights)
        trunk.fc = nn.Identity()
        self.trunk = trunk
        self.weights_name = str(weights) if weights is not None else "random-init"
        self.out_channels = 512
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)

    def forward(self, blocks: torch.Tensor, *, channels_first: bool = False) -> torch.Tensor:
        """``(B, k, k, 3)`` uint8 blocks (``(B, 3, k, k)`` with ``channels_first``) -> ``(B, 512)``."""
        x = blocks if channels_first else blocks.permute(0, 3, 1, 2)
        x = (x.float() - self.mean) / self.std
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.trunk(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(resnet18, weights={self.weights_name})"


def _csr_adjacency(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """The edge list as a sparse CSR matrix, which GCNConv propagates with a sparse matmul.

    Eq. 1 graphs are dense (about 80 neighbours per block at stride 50, k = 224); on CPU the
    sparse matmul is ~5x faster than the scatter of an ``edge_index`` (benchmarks/bench_mil.py)
    and gives the same result.
    """
    with warnings.catch_warnings():
        # torch announces, once per process, that CSR is beta and that invariant checks are off.
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        warnings.filterwarnings("ignore", message=".*Sparse invariant checks are implicitly.*")
        return to_torch_csr_tensor(edge_index, size=(num_nodes, num_nodes))


class GCNMIL(nn.Module):
    r"""Two GCN layers, Ilse attention pooling and a linear classifier (Table 2, layers 19–22).

    .. math::
        H = \mathrm{ReLU}(\mathrm{GCN}_2(\mathrm{ReLU}(\mathrm{GCN}_1(X, A)), A)), \quad
        \alpha_n = \frac{\exp(w^\top \tanh(V h_n))}{\sum_{m \in \text{bag}} \exp(w^\top \tanh(V h_m))},
        \quad z = \sum_n \alpha_n h_n, \quad \text{logits} = W_c z + b_c

    Parameters
    ----------
    in_channels : int, optional
        Block feature size (512 for ResNet18).
    hidden_channels : int, optional
        GCN output size (512).
    attention_channels : int, optional
        Hidden size L of the attention network (128).
    num_classes : int, optional
        Outputs (3).
    init : {"pytorch", "ones"}, optional
        ``"ones"`` is the paper's initialisation (weights 1, biases 0); ``"pytorch"`` keeps
        the layers' default initialisation.

    Shapes
    ------
    - input: ``x`` ``[N, in_channels]``, ``edge_index`` ``[2, E]``, ``batch`` ``[N]`` (optional)
    - output: ``logits`` ``[B, num_classes]`` and ``alpha`` ``[N]`` (sums to 1 in each bag)
    """

    def __init__(
        self,
        in_channels: int = 512,
        hidden_channels: int = 512,
        attention_channels: int = 128,
        num_classes: int = 3,
        *,
        init: str = "pytorch",
    ) -> None:
        super().__init__()
        if init not in ("pytorch", "ones"):
            raise ValueError(f"unknown init {init!r}; choose 'pytorch' or 'ones'")
        self.init = init
        self.conv1 = GCNConv(in_channels, hidden_channels)
        self.conv2 = GCNConv(hidden_channels, hidden_channels)
        self.attention = nn.Sequential(
            nn.Linear(hidden_channels, attention_channels),
            nn.Tanh(),
            nn.Linear(attention_channels, 1),
        )
        self.classifier = nn.Linear(hidden_channels, num_classes)
        # Per-channel standardisation of the input block features (identity by default); part
        # of the state dict, so a saved model carries the statistics it was trained with.
        self.register_buffer("feature_mean", torch.zeros(in_channels))
        self.register_buffer("feature_std", torch.ones(in_channels))
        self.reset_parameters()

    def set_feature_scaling(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise inputs as ``(x - mean) / std`` (std clamped at 1e-6) from now on."""
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp_min(1e-6))

    def reset_parameters(self) -> None:
        """Re-initialise every layer (paper's ones/zeros when ``init == "ones"``)."""
        self.conv1.reset_parameters()
        self.conv2.reset_parameters()
        for layer in (*self.attention, self.classifier):
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        if self.init == "ones":
            for name, param in self.named_parameters():
                nn.init.zeros_(param) if name.endswith("bias") else nn.init.ones_(param)

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if batch is None:
            batch = x.new_zeros(x.shape[0], dtype=torch.long)
        x = (x - self.feature_mean) / self.feature_std
        adj = _csr_adjacency(edge_index, x.shape[0])
        h = torch.relu(self.conv1(x, adj))
        h = torch.relu(self.conv2(h, adj))
        gate = self.attention(h).squeeze(-1)
        alpha = segment_softmax(gate, batch)
        bag = global_add_pool(alpha.unsqueeze(-1) * h, batch)
        return self.classifier(bag), alpha

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(conv1={self.conv1}, conv2={self.conv2}, "
            f"attention={self.attention}, classifier={self.classifier}, init={self.init!r})"
        )


def layer_table(encoder: nn.Module, model: GCNMIL) -> pd.DataFrame:
    """The model structure table (Table 2), read from the model objects.

    Returns
    -------
    DataFrame
        Columns ``layers, type, in_channels, out_channels, parameters``.
    """

    def n_params(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    att_hidden = model.attention[0].out_features
    rows = [
        ("1-18", "ResNet18", 3, 512, n_params(encoder)),
        ("19", "GCN", model.conv1.in_channels, model.conv1.out_channels, n_params(model.conv1)),
        ("20", "GCN", model.conv2.in_channels, model.conv2.out_channels, n_params(model.conv2)),
        (
            "21",
            f"GraphAttention(L={att_hidden})",
            model.attention[0].in_features,
            1,
            n_params(model.attention),
        ),
        (
            "22",
            "FC+Softmax",
            model.classifier.in_features,
            model.classifier.out_features,
            n_params(model.classifier),
        ),
    ]
    return pd.DataFrame(
        rows, columns=["layers", "type", "in_channels", "out_channels", "parameters"]
    ).set_index("layers")


# --------------------------------------------------------------------------- segmentation


def block_scores(alpha: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Per-block lesion score of one bag: predicted-class probability × rescaled attention.

    Parameters
    ----------
    alpha : (N,) ndarray
        Attention weights of the bag's blocks (they sum to 1).
    probabilities : (C,) ndarray
        The bag's class-probability vector p.

    Returns
    -------
    (N,) float64 ndarray in [0, 1]
        ``max(p) · α_n / max_m α_m``.

    Notes
    -----
    Eq. 3 thresholds "softmax(p × α)" at η swept over 0..1, which does not pin down a scale:
    α sums to one over hundreds of blocks, so p × α is of order 1/N.
    """
    # DEVIATION: Eq. 3's softmax(p × α) is read as α rescaled by its bag maximum times the
    # predicted-class probability, because the literal product is ~1/N and no η in 0..1 splits it.
    alpha = np.asarray(alpha, dtype=np.float64)
    top = alpha.max() if alpha.size else 1.0
    return float(np.max(probabilities)) * alpha / (top if top > 0 else 1.0)


def segmentation_map(
    shape: tuple[int, int], coords: np.ndarray, block_size: int, scores: np.ndarray
) -> np.ndarray:
    """Per-pixel score: the maximum over the blocks covering each pixel (Eq. 3).

    Parameters
    ----------
    shape : (H, W)
        Image size.
    coords : (N, 2) ndarray
        Top-left corners of the blocks.
    block_size : int
        Block side k.
    scores : (N,) ndarray
        One score per block (see :func:`block_scores`).

    Returns
    -------
    (H, W) float32 ndarray
        0 where no block covers a pixel.
    """
    out = np.zeros(shape, dtype=np.float32)
    for (y, x), score in zip(np.asarray(coords), np.asarray(scores, dtype=np.float32), strict=True):
        view = out[y : y + block_size, x : x + block_size]
        np.maximum(view, score, out=view)
    return out


def jaccard_index(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Jaccard index TP / (TP + FP + FN) of two binary masks (Eq. 9); 1 when both are empty."""
    prediction = np.asarray(prediction, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    union = np.count_nonzero(prediction | truth)
    if union == 0:
        return 1.0
    return np.count_nonzero(prediction & truth) / union


def threshold_sweep(
    score_maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], thresholds: np.ndarray
) -> np.ndarray:
    """Mean Jaccard over images for each threshold η (pixel is lesion when score >= η).

    Returns
    -------
    (T,) float64 ndarray
    """
    result = np.zeros(len(thresholds))
    for score, mask in zip(score_maps, masks, strict=True):
        for i, eta in enumerate(thresholds):
            result[i] += jaccard_index(score >= eta, mask)
    return result / max(len(score_maps), 1)


def everything_jaccard(truth: np.ndarray) -> float:
    """Jaccard index of the "everything" mask (every pixel called lesion): lesion area / image area.

    The trivial baseline of a segmentation: what Eq. 3 gives at η = 0 or with flat attention.
    """
    return jaccard_index(np.ones(np.shape(truth), dtype=bool), truth)


def best_threshold_jaccard(score_map: np.ndarray, truth: np.ndarray) -> float:
    """The best Jaccard index of ``score_map >= t`` against ``truth`` over every threshold t.

    Every distinct score is tried (and a threshold above all of them, the empty mask), so this
    is the exact best of one image's map: pixels are ranked by score, and the Jaccard of each
    prefix that ends at a change of score is ``lesion / (lesion area + prefix area - lesion)``.
    """
    values = np.asarray(score_map, dtype=np.float64).ravel()
    lesion = np.asarray(truth, dtype=bool).ravel()
    total = int(lesion.sum())
    order = np.argsort(-values, kind="stable")
    ranked = values[order]
    inside = np.cumsum(lesion[order])
    area = np.arange(1, len(ranked) + 1)
    ends = np.r_[ranked[1:] != ranked[:-1], True]
    jaccard = inside[ends] / (total + area[ends] - inside[ends])
    empty = 1.0 if total == 0 else 0.0
    return float(max(jaccard.max(initial=0.0), empty))


def block_fractions(truth: np.ndarray, coords: np.ndarray, block_size: int) -> np.ndarray:
    """Fraction of each k x k block (top-left ``coords``) that lies inside ``truth`` (N,)."""
    lesion = np.asarray(truth, dtype=np.float64)
    integral = np.pad(lesion.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    h, w = lesion.shape
    y0, x0 = coords[:, 0], coords[:, 1]
    y1, x1 = np.minimum(y0 + block_size, h), np.minimum(x0 + block_size, w)
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    area = np.maximum((y1 - y0) * (x1 - x0), 1)
    return inside / area


def oracle_block_jaccard(truth: np.ndarray, coords: np.ndarray, block_size: int) -> float:
    """The oracle of Eq. 3's segmentation at this block grid: the best Jaccard of the score map
    whose block scores are each block's lesion fraction, over every threshold.

    Eq. 3 can only call unions of whole blocks lesion (a pixel's score is the maximum of its
    blocks'; uncovered pixels score 0, lesion only at η = 0). Attention that ranked blocks by
    how much lesion they hold, with the best threshold of each image, reaches this value; it
    is the ceiling a model can approach at this grid (reachable, not a proven maximum over
    every union of blocks, which is a combinatorial search).
    """
    truth = np.asarray(truth, dtype=bool)
    fractions = block_fractions(truth, coords, block_size)
    score_map = segmentation_map(truth.shape, coords, block_size, fractions)
    return best_threshold_jaccard(score_map, truth)
