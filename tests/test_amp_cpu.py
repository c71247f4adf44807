"""Mixed precision of every training recipe, run here on the CPU with bf16 autocast.

No GPU has run the AMP paths yet; a dtype error there (a bf16 tensor meeting a float32 one in an
in-place op, a bf16 array handed to numpy) would surface only on the GPU machine. The training
core turns autocast on for CUDA only (``optim._amp_dtype``), so on the CPU these tests make it
return bf16: the core's own loop (``_train_one_epoch``'s autocast, the GradScaler left off as for
bf16 on a GPU) then runs every recipe's model with bf16 activations. gcn_mil's extraction
autocast (``features._autocast``) is driven the same way. Each test asserts that autocast was
really on (a bf16 output seen in training), finite losses, and float32 where the code writes
results (probabilities, Grad-CAM maps, features).

The same tests run on CUDA with the real AMP options, unpatched (marked ``gpu``: what
``benchmarks/gpu_check.sh`` runs first).

Predictions and Grad-CAM run outside autocast in the papers' code, and must: pytorch-grad-cam
hands the layer's activations to numpy (no bfloat16 there), and the GCN-MIL head's sparse CSR
matmul has no bf16 kernel on the CPU. The tests explain and predict as the papers do.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from melrepro.methods import saliency, training
from melrepro.methods.training import loop
from melrepro.methods.transforms import eval_transform, train_transform

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
SIZE = 32

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
            # The recipes' deterministic mode warns (warn_only) about CUDA ops without a
            # deterministic kernel, and cuBLAS without CUBLAS_WORKSPACE_CONFIG: not dtype errors.
            pytest.mark.filterwarnings("ignore:.*deterministic:UserWarning"),
        ],
    ),
]

#: Every recipe trains 1 epoch of batches of 4 (2 optimiser steps), AMP on.
TINY = {"epochs": 1, "batch_size": 4, "eval_batch_size": 8, "freeze_epochs": 0, "amp": True}


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def amp(monkeypatch, request):
    """The device of the test; on the CPU the core's AMP dtype becomes bf16 (CUDA: unchanged)."""
    device = request.param
    if device == "cpu":
        monkeypatch.setattr(
            loop, "_amp_dtype", lambda options, _device: torch.bfloat16 if options.amp else None
        )
    return device


def _expected_dtype(device: str) -> torch.dtype:
    if device == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


class _OutputDtypes:
    """Forward hook on a module: the dtypes of its outputs while the model trains."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.seen: set[torch.dtype] = set()
        module.register_forward_hook(self)

    def __call__(self, module, _inputs, output) -> None:
        if module.training:
            self.seen.add(output.dtype)


def _images(n: int, side: int = SIZE + 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 120, (n, side, side, 3), dtype=np.uint8)
    images[labels == 1, 8:24, 8:24] = 240
    return images, labels


def _train(train, val, options, tmp_path, watched, **kwargs):
    """train_model with a hook on ``watched(model)`` recording the training outputs' dtypes."""
    factory = kwargs.pop("model_factory", None) or training.build_model
    hooks = {}

    def build(opts):
        model = factory(opts)
        hooks["dtypes"] = _OutputDtypes(watched(model))
        return model

    build.fingerprint = lambda: getattr(factory, "fingerprint", lambda: "build_model")()
    result = training.train_model(
        train, val, options, checkpoint_dir=tmp_path, model_factory=build, **kwargs
    )
    assert np.isfinite(result.history["train_loss"]).all(), result.history
    return result, hooks["dtypes"].seen


def _check_probabilities(probs: np.ndarray, n: int) -> None:
    assert probs.dtype == np.float64  # written as such to predictions.parquet
    assert len(probs) == n
    assert np.isfinite(probs).all()
    assert (probs >= 0).all()
    assert (probs <= 1).all()


@pytest.mark.parametrize("amp", DEVICES, indirect=True)
def test_effnet_ham_trains_with_amp_mixup_and_device_augmentation(amp, tmp_path):
    """Check EfficientNet-B0 with effnet_ham's head and recipe (focal loss, sampler, 2-step
    accumulation, mixup, augmentation on the device as on a GPU) trains under autocast, predicts
    float probabilities and gives float32 Grad-CAM maps in [0, 1] for the positive class."""
    from melrepro.papers.effnet_ham.datasets import split_options

    overrides = {**TINY, "image_size": SIZE, "mixup_alpha": 0.2, "accumulation_steps": 2}
    pre, options = split_options(
        CONFIG["effnet_ham"]["recipe"], overrides, seed=0, device=amp, threads=1
    )
    assert pre["image_size"] == SIZE
    assert options.amp
    images, labels = _images(16)
    train = training.ArrayDataset(images, labels)
    val = training.ArrayDataset(images[:8, 4:-4, 4:-4], labels[:8], eval_transform())
    result, seen = _train(
        train,
        val,
        options,
        tmp_path,
        lambda model: model.head,
        device_transform=train_transform(SIZE),
    )
    assert seen == {_expected_dtype(amp)}
    _check_probabilities(training.predict(result.model, val, options=options, device=amp), 8)

    x = torch.stack([val[i][0] for i in range(4)])
    maps = saliency.gradcam_maps(
        result.model, x, training.gradcam_target_layer(result.model), classes=[1] * 4
    )
    assert maps.dtype == np.float32
    assert maps.shape == (4, SIZE, SIZE)
    assert np.isfinite(maps).all()
    assert maps.min() >= 0
    assert maps.max() <= 1


@pytest.mark.parametrize("kind", ["base", "brightness", "sex"])
@pytest.mark.parametrize("amp", DEVICES, indirect=True)
def test_siim2020_metadata_models_train_with_amp(amp, kind, tmp_path):
    """Check siim2020's ResNet18 + metadata MLP and both expert models (two ResNet18s routed by
    brightness or by the sex flag) train under autocast and predict float probabilities."""
    from melrepro.methods.metadata_models import ModelSpec

    train_settings = {**CONFIG["siim2020"]["train"], **TINY}
    options = training.TrainOptions.from_dict(train_settings, seed=0, device=amp, threads=1)
    head = CONFIG["siim2020"]["head"]
    n_metadata = 7 if kind == "sex" else 9
    spec = ModelSpec(
        kind=kind,
        n_metadata=n_metadata,
        brightness_threshold=60.0,  # the images' mean brightness straddles it: both experts train
        hidden=tuple(head["hidden"]),
        metadata_dropout=head["metadata_dropout"],
        dropout=head["dropout"],
    )
    images, labels = _images(16, side=SIZE)
    rng = np.random.default_rng(1)
    # The sex model's routing flag is one column after its metadata: both experts train.
    metadata = rng.random((16, n_metadata + (kind == "sex"))).astype(np.float32)
    metadata[:, -1] = np.arange(16) % 3 == 0
    train = training.ArrayDataset(images, labels, eval_transform(), metadata=metadata)

    def trunk(model):  # the experts' first ResNet18, or the base model's one
        return model.backbone if kind == "base" else model.backbone[0]

    result, seen = _train(train, train, options, tmp_path, trunk, model_factory=spec)
    assert _expected_dtype(amp) in seen
    _check_probabilities(training.predict(result.model, train, options=options, device=amp), 16)


@pytest.mark.parametrize("model_key", ["vgg16", "resnet50"])
@pytest.mark.parametrize("amp", DEVICES, indirect=True)
def test_gradcam_overlap_models_train_with_amp_and_explain_in_float32(amp, model_key, tmp_path):
    """Check gradcam_overlap's two classifiers (vgg16_bn with the flatten-MLP head, ResNet50;
    8 classes, class-weighted cross-entropy, the dihedral augmentation) train under autocast,
    predict float probabilities, and give float32 layer-resolution Grad-CAM maps at the paper's
    Keras layer."""
    from melrepro.papers.gradcam_overlap import CLASSES
    from melrepro.papers.gradcam_overlap.datasets import _Dihedral
    from melrepro.papers.gradcam_overlap.train import _split_settings, _train_options

    model = CONFIG["gradcam_overlap"]["models"][model_key]
    settings, _, _ = _split_settings({**CONFIG["gradcam_overlap"]["train"], **model, **TINY})
    settings["image_size"] = SIZE
    weights = [1.0 + k / 8 for k in range(len(CLASSES))]
    run_info = {"seed": 0, "pretrained": False, "device": amp}
    options = _train_options(settings, weights, run_info, threads=1)
    assert options.head == "flatten_mlp"
    assert options.n_classes == len(CLASSES)
    rng = np.random.default_rng(2)
    images = rng.integers(0, 255, (16, SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.arange(16) % len(CLASSES)
    train = training.ArrayDataset(images, labels, _Dihedral())
    val = training.ArrayDataset(images[:8], labels[:8])
    result, seen = _train(train, val, options, tmp_path, lambda m: m.head)
    assert seen == {_expected_dtype(amp)}
    probs = training.predict(result.model, val, options=options, device=amp)
    assert probs.shape == (8, len(CLASSES))
    assert np.isfinite(probs).all()

    x = torch.from_numpy(images[:4]).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    layer = training.keras_layer(result.model, model["layer"])
    maps, classes, _ = saliency.gradcam_layer_maps(result.model, x, layer)
    grid = training.layer_grid(result.model, model["layer"], SIZE)
    assert maps.dtype == np.float32
    assert maps.shape == (4, *grid)
    assert np.isfinite(maps).all()
    assert classes.shape == (4,)


def _bench_mil():
    """benchmarks/bench_mil.py as a module: its writer of a tiny cache, manifest and split."""
    spec = importlib.util.spec_from_file_location("bench_mil", ROOT / "benchmarks" / "bench_mil.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("data_path", ["cpu", "device"])
@pytest.mark.parametrize("amp", DEVICES, indirect=True)
def test_gcn_mil_features_under_autocast_train_and_evaluate_the_head(
    amp, data_path, tmp_path, monkeypatch
):
    """Check gcn_mil end to end on a tiny shard: the block encoder under autocast (both data
    paths) writes finite float16 features, and the GCN-MIL head trains on them (finite loss)
    and evaluates to finite float probabilities."""
    from melrepro.papers.gcn_mil import features
    from melrepro.papers.gcn_mil.evaluate import evaluate_gcn_mil
    from melrepro.papers.gcn_mil.train import train_gcn_mil

    autocasts = []
    real_autocast = features._autocast

    def recording_autocast(options, dev):
        if dev.type == "cpu":
            context = torch.autocast("cpu", dtype=torch.bfloat16)
        else:
            context = real_autocast(options, dev)
        autocasts.append(context)
        return context

    monkeypatch.setattr(features, "_autocast", recording_autocast)
    _bench_mil()._write_bench_set(tmp_path, n_bags=12, blocks=16)
    bags = {"block_size": 8, "strides": [8, 8, 8], "rotation_steps": {"melanoma": 90,
            "seborrheic_keratosis": 90, "nevus": 90}, "dihedral_views": 1, "batch_size": 8,
            "data_path": data_path}  # fmt: skip
    shards = []
    for k in range(2):
        out = tmp_path / f"amp/shard-{k:03d}.pt"
        features.extract_gcn_mil_features(
            tmp_path / f"cache/shard-{k:03d}.npz", tmp_path / "manifest.parquet",
            tmp_path / "split.parquet", out, out.with_name(f"shard-{k:03d}_zero.pt"),
            bags=bags, device=amp,
        )  # fmt: skip
        shards.append(out)
    assert autocasts
    assert all(not isinstance(c, contextlib.nullcontext) for c in autocasts)
    assert {c.fast_dtype for c in autocasts} == {_expected_dtype(amp)}
    for path in shards:
        for bag in torch.load(path, weights_only=False)["bags"]:
            assert bag["features"].dtype == torch.float16
            assert torch.isfinite(bag["features"]).all()

    model_path = tmp_path / "model.pt"
    train_gcn_mil(
        [str(p) for p in shards], model_path, tmp_path / "history.tsv", tmp_path / "ck",
        model={"hidden_channels": 16, "attention_channels": 8},
        train={"epochs": 1, "lr": 1e-3, "batch_size": 4}, device=amp,
    )  # fmt: skip
    history = pd.read_csv(tmp_path / "history.tsv", sep="\t")
    assert np.isfinite(history.filter(like="loss").to_numpy()).all()
    out = [tmp_path / f"eval/{name}" for name in ("p.csv", "s.csv", "m.json", "a.npz")]
    caches = [str(tmp_path / f"cache/shard-{k:03d}.npz") for k in range(2)]
    zero = [str(p.with_name(p.stem + "_zero.pt")) for p in shards]
    evaluate_gcn_mil(model_path, zero, caches, *out, device=amp)
    predictions = pd.read_csv(out[0])
    probs = predictions.filter(like="p_").to_numpy()
    assert len(predictions) > 0
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_expert_features_of_bf16_trunks_are_gathered_in_float32():
    """Check ExpertResNet gathers its experts' features into float32 when the trunks return
    bf16, as on CUDA under autocast. CPU autocast promotes index_copy to the widest dtype and
    hides this; CUDA autocast does not, and index_copy refused bf16 into float32."""
    from melrepro.methods.metadata_models import ModelSpec

    model = ModelSpec(kind="brightness", n_metadata=9, brightness_threshold=60.0)(
        training.TrainOptions(device="cpu")
    ).eval()
    for net in model.backbone:  # each trunk returns bf16, as under CUDA autocast
        net.register_forward_hook(lambda _m, _i, out: out.to(torch.bfloat16))
    x = torch.rand(6, 3, SIZE, SIZE)
    x[:3] *= 0.1  # three dark images for expert 0, three bright ones for expert 1
    meta = torch.rand(6, 9)
    assert model.expert_of(x, meta).tolist() == [0, 0, 0, 1, 1, 1]
    with torch.no_grad():
        logits = model(x, meta)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
