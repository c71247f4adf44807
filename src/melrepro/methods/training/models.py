"""The classifiers: torchvision backbones by name with an optional metadata branch
(:class:`CNNClassifier`, :func:`build_model`), model factories, Grad-CAM layers, and the
Keras-style heads and named Grad-CAM layers of paper 004 (the TIML toolkit).

TIML builds its VGG16 and ResNet50 classifiers as the convolutional trunk *without* its global
pooling, ``Flatten``, ``Dense(2048, relu)``, ``Dropout(0.5)``, ``Dense(2048, relu)``,
``Dropout(0.5)``, ``Dense(n_classes)``. :func:`use_flatten_mlp_head` turns a
:class:`CNNClassifier` into that network; the first layer's width follows from the input
size (VGG16 at 450 px: 512 x 14 x 14 = 100,352; ResNet50 at 227 px: 2048 x 8 x 8 = 131,072).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torchvision
from torch import nn

from melrepro.methods.training.options import BACKBONES, TrainOptions

__all__ = [
    "KERAS_LAYERS",
    "CNNClassifier",
    "ModelFactory",
    "build_model",
    "flatten_size",
    "gradcam_target_layer",
    "keras_layer",
    "layer_grid",
    "use_flatten_mlp_head",
]


class CNNClassifier(nn.Module):
    r"""A torchvision backbone, an optional metadata MLP, and a linear head.

    .. math:: z = W [\mathrm{pool}(f(x)) \,\|\, g(m)] + b

    where :math:`f` is the backbone up to its pooled features and :math:`g` a two-layer MLP
    on the metadata :math:`m` (absent when ``n_metadata == 0``).

    Parameters
    ----------
    backbone : str
        One of ``BACKBONES``.
    n_outputs : int
        Logits per image (1 for binary).
    n_metadata : int
        Metadata width (0: none).
    metadata_hidden : int
    dropout : float
    pretrained : bool
        Load torchvision's default ImageNet weights for the backbone.

    Shapes
    ------
    x: (B, 3, H, W), meta: (B, n_metadata) -> (B, n_outputs)
    """

    def __init__(
        self,
        backbone: str,
        n_outputs: int,
        *,
        n_metadata: int = 0,
        metadata_hidden: int = 64,
        dropout: float = 0.2,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {list(BACKBONES)}")
        self.backbone_name = backbone
        self.weights_name = "random_init"
        weights = None
        if pretrained:
            # DEVIATION: gradcam_overlap: Keras' ImageNet ResNet50 (like torchvision's IMAGENET1K_V1) ->
            # DEFAULT, which for resnet50 is IMAGENET1K_V2 (resnet18, vgg16 and efficientnet_b0: V1 only).
            weights = torchvision.models.get_model_weights(backbone).DEFAULT
            self.weights_name = f"torchvision:{backbone}:{weights.name}"
        net = torchvision.models.get_model(backbone, weights=weights)
        if backbone.startswith("efficientnet"):
            n_features = net.classifier[1].in_features
            net.classifier = nn.Identity()
        elif backbone.startswith("resnet"):
            n_features = net.fc.in_features
            net.fc = nn.Identity()
        else:  # vgg: keep the two hidden FC layers, replace the 1000-way output
            n_features = net.classifier[6].in_features
            net.classifier[6] = nn.Identity()
        self.backbone = net
        self.n_metadata = n_metadata
        self.meta = None
        n_meta_out = 0
        if n_metadata > 0:
            self.meta = nn.Sequential(
                nn.Linear(n_metadata, metadata_hidden),
                nn.BatchNorm1d(metadata_hidden),
                nn.ReLU(),
                nn.Linear(metadata_hidden, metadata_hidden),
                nn.ReLU(),
            )
            n_meta_out = metadata_hidden
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(n_features + n_meta_out, n_outputs)
        )

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        features = self.backbone(x)
        if self.meta is not None:
            if meta is None or meta.shape[-1] != self.n_metadata:
                raise ValueError(f"this model needs metadata of width {self.n_metadata}")
            features = torch.cat([features, self.meta(meta)], dim=1)
        return self.head(features)

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters trained during the frozen-backbone warm-up."""
        params = list(self.head.parameters())
        if self.meta is not None:
            params += list(self.meta.parameters())
        return params

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(backbone={self.backbone_name}, weights={self.weights_name}, "
            f"n_metadata={self.n_metadata}, head={self.head})"
        )


def build_model(options: TrainOptions) -> CNNClassifier:
    """Create the classifier described by ``options`` (seeded with ``options.seed``)."""
    torch.manual_seed(options.seed)
    model = CNNClassifier(
        options.backbone,
        options.n_classes,
        n_metadata=options.n_metadata,
        metadata_hidden=options.metadata_hidden,
        dropout=options.dropout,
        pretrained=options.pretrained,
    )
    if options.head == "flatten_mlp":
        use_flatten_mlp_head(model, options)
    return model


def gradcam_target_layer(model: CNNClassifier) -> nn.Module:
    """The last convolutional block of the backbone, where Grad-CAM is usually taken."""
    net = model.backbone
    if model.backbone_name.startswith("efficientnet"):
        return net.features[-1]
    if model.backbone_name.startswith("resnet"):
        return net.layer4[-1]
    # vgg16: the ReLU after the last convolution (before the final max-pool)
    return net.features[-2]


#: A model factory (``train_model(model_factory=...)``): builds the model from the options instead
#: of :func:`build_model`. It may define ``fingerprint() -> str`` so that checkpoints written with
#: another factory configuration are not resumed; the model needs a ``backbone`` module (frozen
#: during warm-up epochs) and a ``weights_name``.
ModelFactory = Callable[[TrainOptions], nn.Module]


def _factory_fingerprint(model_factory: ModelFactory | None) -> str:
    """What identifies a factory in the checkpoint fingerprint ('' for :func:`build_model`)."""
    if model_factory is None:
        return ""
    own = getattr(model_factory, "fingerprint", None)
    return str(own()) if callable(own) else getattr(model_factory, "__qualname__", "factory")


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
    # res4f_branch2c: the same convolution in the last bottleneck of stage 4 (layer3[5].conv3),
    # stride 16 instead of 32: the embedded default's ResNet50 layer (a 7x7 grid at 112 px).
    ("resnet50", "res4f_branch2c"): lambda net: net.layer3[5].conv3,
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
    # DEVIATION: gradcam_overlap: TIML's Keras Dense layers start Glorot-uniform with zero biases ->
    # torch's default (Kaiming-uniform) init of the Linear layers; the paper does not state one.
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
    """The torchvision module of a Keras layer name (``block5_conv3``, ``res5c_branch2c``...)."""
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
