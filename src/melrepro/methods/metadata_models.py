"""ResNet18 with a tabular-metadata MLP, and two-expert variants with hard routing (siim2020).

Paper 002 (§4, Fig. 7), after the winning SIIM-ISIC 2020 solution: image features of a
torchvision ResNet18 (``fc`` removed, 512 features) are concatenated with the output of a
metadata MLP ``Linear(m, 512)-BN-SiLU-Dropout(0.3)-Linear(512, 128)-BN-SiLU``, then
``Dropout(0.5)-Linear(640, 1)`` gives one logit.

The experts keep one metadata MLP and one head and have two feature extractors; every image goes
to exactly one of them (hard routing):

* ``sex``: female images to the female expert, every other image (male or unknown) to the male
  expert. The metadata then has no sex columns (7 features); the routing flag travels as one
  extra last metadata column, which the MLP does not see.
* ``brightness``: the mean over pixels and channels of the input image on the 0-255 scale
  (inputs are ``uint8 / 255``); below the threshold (the median brightness of the training
  melanomas) goes to the dark expert.

Models are built through :class:`ModelSpec`, a factory for
``melrepro.methods.training.train_model(model_factory=...)``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torchvision
from torch import nn

__all__ = [
    "KINDS",
    "SITES_2020",
    "ExpertResNet",
    "MetaResNet",
    "MetadataMLP",
    "ModelSpec",
    "encode_metadata",
    "metadata_columns",
]

#: ``anatom_site_general_challenge`` vocabulary of ISIC 2020, alphabetical (the one-hot order).
SITES_2020 = (
    "head/neck",
    "lower extremity",
    "oral/genital",
    "palms/soles",
    "torso",
    "upper extremity",
)
#: Model kinds of table01: one extractor, or two experts routed by sex or brightness.
KINDS = ("base", "sex", "brightness")


def metadata_columns(*, sites: Sequence[str] = SITES_2020, include_sex: bool = True) -> list[str]:
    """Names of the encoded metadata features, in order."""
    sex = ["sex_female", "sex_male"] if include_sex else []
    return ["age_approx", *sex, *(f"site_{s}" for s in sites)]


def encode_metadata(
    frame: pd.DataFrame,
    *,
    sites: Sequence[str] = SITES_2020,
    include_sex: bool = True,
    route_female: bool = False,
) -> np.ndarray:
    """Encode age, sex and site as the paper's 9 features (float32).

    Age is kept raw (years); sex and site are one-hot in a fixed order (:func:`metadata_columns`).
    A missing or unseen value is all zeros (age 0, no sex, no site).

    Parameters
    ----------
    frame : DataFrame with ``age``, ``sex`` and ``site``
    sites : sequence of str
        The site vocabulary (one-hot order).
    include_sex : bool
        False for the sex expert (7 features).
    route_female : bool
        Append the sex expert's routing flag (1.0 for female) as a last column.

    Returns
    -------
    (N, F) float32 ndarray
    """
    # DEVIATION: the paper drops rows with missing metadata but must score every test image -> a
    # test row's missing age is 0 and its missing sex/site one-hots are all 0 (the paper is silent).
    age = pd.to_numeric(frame["age"], errors="coerce").astype(float).fillna(0.0).to_numpy()
    sex = frame["sex"].astype("string")
    site = frame["site"].astype("string")
    cols = [age]
    if include_sex:
        cols += [(sex == "female").fillna(False).to_numpy(float)]
        cols += [(sex == "male").fillna(False).to_numpy(float)]
    cols += [(site == s).fillna(False).to_numpy(float) for s in sites]
    if route_female:
        cols.append((sex == "female").fillna(False).to_numpy(float))
    return np.stack(cols, axis=1).astype(np.float32)


class MetadataMLP(nn.Sequential):
    """``Linear(n, h1)-BN-SiLU-Dropout(p)-Linear(h1, h2)-BN-SiLU`` (paper Fig. 7)."""

    def __init__(self, n_in: int, hidden: Sequence[int] = (512, 128), dropout: float = 0.3):
        h1, h2 = hidden
        super().__init__(
            nn.Linear(n_in, h1),
            nn.BatchNorm1d(h1),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(h1, h2),
            nn.BatchNorm1d(h2),
            nn.SiLU(),
        )
        self.n_out = h2


def _resnet18(pretrained: bool) -> tuple[nn.Module, str]:
    weights = None
    name = "random_init"
    if pretrained:
        weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
        name = f"torchvision:resnet18:{weights.name}"
    net = torchvision.models.resnet18(weights=weights)
    net.fc = nn.Identity()
    return net, name


class MetaResNet(nn.Module):
    """The base model: ResNet18 features ‖ metadata MLP -> dropout -> one logit.

    Shapes: x (B, 3, H, W), meta (B, n_metadata) -> (B, 1).
    """

    def __init__(
        self,
        n_metadata: int,
        *,
        hidden: Sequence[int] = (512, 128),
        metadata_dropout: float = 0.3,
        dropout: float = 0.5,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        self.backbone, self.weights_name = _resnet18(pretrained)
        self.backbone_name = "resnet18"
        self.n_metadata = n_metadata
        self.meta = MetadataMLP(n_metadata, hidden, metadata_dropout)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(512 + self.meta.n_out, 1))

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        if meta is None or meta.shape[-1] != self.n_metadata:
            raise ValueError(f"this model needs metadata of width {self.n_metadata}")
        return self.head(torch.cat([self.backbone(x), self.meta(meta)], dim=1))


class ExpertResNet(nn.Module):
    """Two ResNet18 extractors (experts), one metadata MLP and head, hard routing.

    Parameters
    ----------
    route : {"sex", "brightness"}
        ``sex``: the last metadata column is the routing flag (1 = female -> expert 0); the MLP
        gets the other ``n_metadata`` columns. ``brightness``: images whose mean (0-255) is below
        ``brightness_threshold`` go to expert 0 (dark).
    n_metadata : int
        Width of the metadata the MLP sees (without the routing flag).
    brightness_threshold : float
        Stored as a buffer, so a saved model routes as it was trained.

    Shapes: x (B, 3, H, W), meta (B, n_metadata [+1 for sex]) -> (B, 1).
    """

    EXPERT_NAMES = {"sex": ("female", "male"), "brightness": ("dark", "light")}

    def __init__(
        self,
        route: str,
        n_metadata: int,
        *,
        brightness_threshold: float = 0.0,
        hidden: Sequence[int] = (512, 128),
        metadata_dropout: float = 0.3,
        dropout: float = 0.5,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        if route not in self.EXPERT_NAMES:
            raise ValueError(f"route must be 'sex' or 'brightness', got {route!r}")
        self.route = route
        first, self.weights_name = _resnet18(pretrained)
        second, _ = _resnet18(pretrained)
        # `backbone` is what the training core freezes during warm-up epochs: both experts.
        self.backbone = nn.ModuleList([first, second])
        self.backbone_name = "resnet18"
        self.n_metadata = n_metadata
        self.register_buffer("brightness_threshold", torch.tensor(float(brightness_threshold)))
        self.meta = MetadataMLP(n_metadata, hidden, metadata_dropout)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(512 + self.meta.n_out, 1))

    def expert_of(self, x: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        """Index (0 or 1) of the expert each image goes to: (B,) long."""
        if self.route == "sex":
            return (meta[:, -1] < 0.5).long()  # female (flag 1) -> 0, everyone else -> 1
        brightness = x.float().mean(dim=(1, 2, 3)) * 255.0
        return (brightness >= self.brightness_threshold).long()  # dark -> 0

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        width = self.n_metadata + (1 if self.route == "sex" else 0)
        if meta is None or meta.shape[-1] != width:
            raise ValueError(f"this model needs metadata of width {width}")
        expert = self.expert_of(x, meta)
        features = x.new_zeros((x.shape[0], 512))
        for k, net in enumerate(self.backbone):
            idx = torch.nonzero(expert == k).squeeze(1)
            if idx.numel() == 0:
                continue
            xs = x.index_select(0, idx)
            # BatchNorm cannot train on one sample (the author's code failed here): a lone
            # sample is seen twice in its expert's batch statistics, its output taken once.
            # The trunk's BatchNorm mode decides, not the model's: precise-BN recalibration
            # trains the BatchNorms of a model in eval mode.
            single = net.bn1.training and idx.numel() == 1
            out = net(xs.repeat(2, 1, 1, 1))[:1] if single else net(xs)
            # Under CUDA autocast the trunk returns bf16/fp16; index_copy (unlike on the CPU,
            # where autocast promotes it) refuses another dtype than the float32 features.
            features = features.index_copy(0, idx, out.to(features.dtype))
        mlp_in = meta[:, : self.n_metadata]
        return self.head(torch.cat([features, self.meta(mlp_in)], dim=1))


@dataclass(frozen=True)
class ModelSpec:
    """A model factory for ``train_model(model_factory=...)``: which siim2020 model to build.

    Attributes
    ----------
    kind : {"base", "sex", "brightness"}
    n_metadata : int
        Metadata width seen by the MLP (9 for base and brightness, 7 for sex).
    brightness_threshold : float
    hidden : tuple of int
    metadata_dropout, dropout : float
    """

    kind: str
    n_metadata: int
    brightness_threshold: float = 0.0
    hidden: tuple[int, int] = (512, 128)
    metadata_dropout: float = 0.3
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")

    def __call__(self, options) -> nn.Module:
        common = {
            "hidden": tuple(self.hidden),
            "metadata_dropout": self.metadata_dropout,
            "dropout": self.dropout,
            "pretrained": bool(options.pretrained),
        }
        if self.kind == "base":
            return MetaResNet(self.n_metadata, **common)
        return ExpertResNet(
            self.kind,
            self.n_metadata,
            brightness_threshold=self.brightness_threshold,
            **common,
        )

    def fingerprint(self) -> str:
        """Stable text of the configuration (for checkpoint fingerprints)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)
