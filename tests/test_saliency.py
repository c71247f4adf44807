"""Tests for melrepro.methods.saliency: Grad-CAM range, size, location; Jaccard and outside share."""

import numpy as np
import pytest
import torch
from torch import nn

from melrepro.methods import saliency, training


class _Gate(nn.Module):
    """Zeroes activations outside the top-left quadrant: the only place the model looks."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(a)
        h, w = a.shape[-2:]
        mask[..., : h // 2, : w // 2] = 1
        return a * mask


class _QuadrantModel(nn.Module):
    """Toy CNN whose single logit depends only on the top-left quadrant."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        nn.init.constant_(self.conv.weight, 0.1)
        nn.init.constant_(self.conv.bias, 0.1)
        self.gate = _Gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.gate(torch.relu(self.conv(x)))
        return a.mean(dim=(1, 2, 3)).unsqueeze(1)


def test_gradcam_peaks_where_the_toy_model_looks():
    """Check the CAM is in [0, 1], has the input size, and lives in the top-left quadrant."""
    torch.manual_seed(0)
    model = _QuadrantModel()
    x = torch.rand(3, 3, 20, 24)
    maps = saliency.gradcam_maps(model, x, model.gate, classes=[1, 1, 1])
    assert maps.shape == (3, 20, 24)
    assert maps.min() >= 0.0
    assert maps.max() <= 1.0
    for m in maps:
        inside = m[:10, :12].mean()
        outside = np.concatenate([m[10:].ravel(), m[:10, 12:].ravel()]).mean()
        assert inside > 0.5
        assert outside < 0.05
        assert m.max() == pytest.approx(1.0)


def test_gradcam_on_efficientnet_is_normalised_and_input_sized():
    """Check the maps of the real backbone through the library are in [0, 1] at input size."""
    torch.manual_seed(0)
    model = training.CNNClassifier("efficientnet_b0", 1)
    x = torch.randn(2, 3, 64, 64)
    maps = saliency.gradcam_maps(model, x, training.gradcam_target_layer(model))
    assert maps.shape == (2, 64, 64)
    assert maps.dtype == np.float32
    assert maps.min() >= 0.0
    assert maps.max() <= 1.0


def test_normalize_map_constant_is_zero():
    """Check a flat map becomes zeros and a ramp spans exactly [0, 1]."""
    assert saliency.normalize_map(np.full((3, 3), 5.0)).max() == 0
    ramp = saliency.normalize_map(np.arange(9.0).reshape(3, 3))
    assert (ramp.min(), ramp.max()) == (0.0, 1.0)


def test_jaccard_hand_made():
    """Check |A∩B| / |A∪B| = 2 / 6 for two overlapping 2x2 squares, and 1 for two empties."""
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0:2, 0:2] = True
    b[0:2, 1:3] = True
    assert saliency.jaccard(a, b) == pytest.approx(2 / 6)
    assert saliency.jaccard(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


def test_threshold_map_and_range_check():
    """Check thresholding is >= and a threshold outside [0, 1] is refused."""
    m = np.array([[0.2, 0.5], [0.7, 1.0]])
    assert saliency.threshold_map(m, 0.5).tolist() == [[False, True], [True, True]]
    with pytest.raises(ValueError, match="threshold"):
        saliency.threshold_map(m, 1.5)


def test_outside_fraction_and_border():
    """Check saliency all in the corner is 100 % outside a central lesion and inside the border."""
    s = np.zeros((10, 10))
    s[0, 0] = 1.0
    lesion = np.zeros((10, 10), bool)
    lesion[3:7, 3:7] = True
    assert saliency.outside_fraction(s, lesion) == 1.0
    frame = saliency.border_mask((10, 10), 0.2)
    assert frame.sum() == 100 - 36
    assert saliency.outside_fraction(s, ~frame) == 1.0
    s[5, 5] = 3.0
    assert saliency.outside_fraction(s, lesion) == pytest.approx(0.25)


def _reference_layer_gradcam(model: nn.Module, x: torch.Tensor, layer: nn.Module) -> np.ndarray:
    """Grad-CAM by hand with the full backward (every weight trainable): ReLU(sum_k mean(dy/dA_k) A_k)
    of the arg-max logit at ``layer``'s resolution, min-max scaled."""
    saved = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: saved.update(a=out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    chosen = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
    (grad,) = torch.autograd.grad(chosen, saved["a"])
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * saved["a"]).sum(1)).detach().numpy()
    return np.stack([saliency.normalize_map(m) for m in cam])


@pytest.mark.parametrize(
    ("backbone", "layer", "size"),
    [("vgg16_bn", "block5_conv3", 64), ("resnet50", "res4f_branch2c", 64)],
)
def test_backward_stopping_at_the_layer_keeps_the_maps_and_skips_the_layers_below(
    backbone, layer, size
):
    """Check Grad-CAM with the backward stopped at the target layer equals the full-backward
    reference, computes no weight gradient below it, and leaves the weights trainable."""
    from melrepro.methods.training.models import keras_layer

    torch.manual_seed(0)
    model = training.CNNClassifier(backbone, 8).eval()
    target = keras_layer(model, layer)
    x = torch.randn(3, 3, size, size)
    expected = _reference_layer_gradcam(model, x, target)
    maps, classes, _ = saliency.gradcam_layer_maps(model, x, target, batch_size=2)
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    with torch.no_grad():
        assert classes.tolist() == model(x).argmax(1).tolist()
    assert all(p.requires_grad for p in model.parameters())

    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    model.zero_grad(set_to_none=True)
    with saliency.backward_stops_at(model, target):
        model(x).max(1).values.sum().backward()
    assert first_conv.weight.grad is None  # the backward never reached the first layer
    model(x).max(1).values.sum().backward()
    assert first_conv.weight.grad is not None  # outside the context it does
