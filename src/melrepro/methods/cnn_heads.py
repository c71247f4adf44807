"""Keras-style classifier heads and named Grad-CAM layers (paper 004, the TIML toolkit).

TIML builds its VGG16 and ResNet50 classifiers as the convolutional trunk *without* its global
pooling, ``Flatten``, ``Dense(2048, relu)``, ``Dropout(0.5)``, ``Dense(2048, relu)``,
``Dropout(0.5)``, ``Dense(n_classes)``. :func:`use_flatten_mlp_head` turns a
:class:`~melrepro.methods.training.CNNClassifier` into that network; the first layer's width
follows from the input size (VGG16 at 450 px: 512 x 14 x 14 = 100,352; ResNet50 at 227 px:
2048 x 8 x 8 = 131,072).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from melrepro.methods.training import CNNClassifier, TrainOptions

__all__ = ["flatten_size", "keras_layer", "layer_grid", "use_flatten_mlp_head"]

#: Keras layer names of paper 004 and the torchvision module each one is.
KERAS_LAYERS = {
    # block5_conv3 with its ReLU (Keras convolutions carry their activation): features[29].
    ("vgg16", "block5_conv3"): lambda net: net.features[29],
    # vgg16_bn: conv, batch norm, ReLU per layer; block5_conv3's ReLU is features[42] (after its
    # batch norm), the last module before the final max-pool.
    ("vgg16_bn", "block5_conv3"): lambda net: net.features[42],
    # res5c_branch2c: the last bottleneck's 1x1 convolution, before its batch norm, the residual
    # add and the ReLU (layer4[2].conv3), not the block output layer4[-1].
    ("resnet50", "res5c_branch2c"): lambda net: net.layer4[2].conv3,
}


def _strip_pooling(net: nn.Module, backbone: str) -> None:
    if backbone.startswith("vgg"):
        net.avgpool = nn.Identity()
        net.classifier = nn.Identity()
    elif backbone.startswith("resnet"):
        net.avgpool = nn.Identity()
        net.fc = nn.Identity()
    else:
        raise ValueError(f"flatten_mlp head is defined for vgg/resnet backbones, not {backbone!r}")


def _meta_copy(net: nn.Module) -> nn.Module:
    """A copy of ``net`` on the meta device: shapes without computation or memory."""
    return copy.deepcopy(net).to("meta").eval()


def flatten_size(net: nn.Module, image_size: int) -> int:
    """Width of the flattened trunk output for a square ``image_size`` input (shape-only forward)."""
    with torch.no_grad():
        out = _meta_copy(net)(torch.zeros(1, 3, image_size, image_size, device="meta"))
    return int(out.flatten(1).shape[1])


def use_flatten_mlp_head(model: CNNClassifier, options: TrainOptions) -> CNNClassifier:
    """Replace ``model``'s pooling and head by TIML's Flatten-MLP head (in place).

    Uses ``options.image_size``, ``head_hidden``, ``dropout`` and ``n_classes``. The metadata
    branch, when present, is concatenated to the flattened features as before.
    """
    _strip_pooling(model.backbone, model.backbone_name)
    n_features = flatten_size(model.backbone, int(options.image_size))
    n_meta = model.meta[-2].out_features if model.meta is not None else 0
    h = options.head_hidden
    model.head = nn.Sequential(
        nn.Linear(n_features + n_meta, h),
        nn.ReLU(),
        nn.Dropout(options.dropout),
        nn.Linear(h, h),
        nn.ReLU(),
        nn.Dropout(options.dropout),
        nn.Linear(h, options.n_classes),
    )
    model.n_flatten = n_features
    return model


def keras_layer(model: CNNClassifier, name: str) -> nn.Module:
    """The torchvision module of a Keras layer name (``block5_conv3``, ``res5c_branch2c``)."""
    try:
        return KERAS_LAYERS[(model.backbone_name, name)](model.backbone)
    except KeyError:
        known = [f"{b}:{n}" for b, n in KERAS_LAYERS]
        raise ValueError(f"no layer {name!r} for {model.backbone_name}; known: {known}") from None


def layer_grid(model: CNNClassifier, name: str, image_size: int) -> tuple[int, int]:
    """(height, width) of Keras layer ``name``'s output for a square ``image_size`` input."""
    shapes = []
    meta = copy.copy(model)
    meta.backbone = _meta_copy(model.backbone)
    keras_layer(meta, name).register_forward_hook(
        lambda _m, _i, out: shapes.append(tuple(out.shape))
    )
    with torch.no_grad():
        meta.backbone(torch.zeros(1, 3, image_size, image_size, device="meta"))
    return shapes[0][-2], shapes[0][-1]
