"""Tests for melrepro.methods.training: losses, sampler, mixup, learning, checkpoint/resume after a kill."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from melrepro.methods import training
from melrepro.methods.transforms import per_image_normalize

TINY = dict(
    backbone="resnet18",
    epochs=4,
    batch_size=8,
    eval_batch_size=16,
    accumulation_steps=2,
    freeze_epochs=1,
    lr=1e-3,
    threads=1,
    device="cpu",
    seed=3,
)


def _blobs(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise images; positives carry a bright square, so the classes are separable."""
    rng = np.random.default_rng(seed)
    labels = np.array([i % 2 for i in range(n)])
    images = rng.integers(40, 90, (n, size, size, 3), dtype=np.uint8)
    for i in np.flatnonzero(labels):
        r, c = rng.integers(4, size - 12, 2)
        images[i, r : r + 8, c : c + 8] = 230
    return images, labels


def test_focal_loss_matches_library_and_paper_formula():
    """Check the focal loss equals torchvision's and the paper's written-out formula."""
    torch.manual_seed(0)
    z = torch.randn(64)
    y = (torch.rand(64) < 0.3).float()
    opts = training.TrainOptions(loss="focal", focal_alpha=0.6, focal_gamma=2.0)
    got = training.make_loss(opts)(z, y)
    ref = sigmoid_focal_loss(z, y, alpha=0.6, gamma=2.0, reduction="mean")
    p = torch.sigmoid(z)
    p_t = p * y + (1 - p) * (1 - y)
    alpha_t = 0.6 * y + 0.4 * (1 - y)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")
    by_hand = (alpha_t * (1 - p_t) ** 2 * bce).mean()
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(got, by_hand)


def test_focal_loss_alpha_weights_positives():
    """Check alpha weights the positive class: same logit margin, alpha=0.75 -> ratio 3:1."""
    opts = training.TrainOptions(loss="focal", focal_alpha=0.75, focal_gamma=2.0)
    loss = training.make_loss(opts)
    pos = loss(torch.tensor([-1.0]), torch.tensor([1.0]))
    neg = loss(torch.tensor([1.0]), torch.tensor([0.0]))
    assert float(pos / neg) == pytest.approx(3.0)


def test_sampler_draws_the_target_mix():
    """Check a 10 % positive set is drawn at 40 % positives (within 5 binomial SDs)."""
    labels = np.array([1] * 100 + [0] * 900)
    n = 20_000
    sampler = training.make_sampler(
        labels, 0.4, num_samples=n, generator=torch.Generator().manual_seed(0)
    )
    drawn = labels[list(sampler)]
    sd = np.sqrt(0.4 * 0.6 / n)
    assert abs(drawn.mean() - 0.4) < 5 * sd
    # Within a class the draw is uniform: every positive appears (expected 80 times each).
    assert len(np.unique(np.flatnonzero(labels)[:100])) == 100
    assert np.isin(np.arange(100), list(sampler)).all()


def test_sampler_needs_both_classes():
    """Check a single-class training set is refused, then a mixed one works."""
    with pytest.raises(ValueError, match="both classes"):
        training.make_sampler(np.zeros(5, int), 0.4)
    assert len(training.make_sampler(np.array([0, 1, 0]), 0.4)) == 3


def test_mixup_is_a_convex_combination():
    """Check mixed images are lam * x + (1 - lam) * x[perm] with a matching label pair."""
    torch.manual_seed(0)
    x = torch.arange(4.0).reshape(4, 1, 1, 1).expand(4, 3, 2, 2).clone()
    y = torch.tensor([0, 1, 2, 3])
    mixed, y_a, y_b, lam = training.mixup_batch(x, y, 0.2, torch.Generator().manual_seed(1))
    assert 0.0 <= lam <= 1.0
    expected = lam * y.float() + (1 - lam) * y_b.float()
    torch.testing.assert_close(mixed[:, 0, 0, 0], expected)
    assert torch.equal(y_a, y)
    assert sorted(y_b.tolist()) == [0, 1, 2, 3]


def test_options_reject_unknown_names():
    """Check typos in option names and choices fail with the valid names listed."""
    with pytest.raises(ValueError, match="unknown training options"):
        training.TrainOptions.from_dict({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="optimizer"):
        training.TrainOptions(optimizer="lamb")
    assert training.TrainOptions.from_dict({"lr": 0.1}).lr == 0.1


@pytest.mark.parametrize("backbone", ["efficientnet_b0", "resnet18"])
def test_model_output_shape_with_metadata(backbone):
    """Check the head takes metadata and returns (B, n_outputs) logits."""
    model = training.CNNClassifier(backbone, 3, n_metadata=4)
    model.eval()
    out = model(torch.randn(2, 3, 32, 32), torch.randn(2, 4))
    assert out.shape == (2, 3)
    assert "weights=random_init" in repr(model)


def test_frozen_warmup_leaves_backbone_unchanged(tmp_path):
    """Check during the freeze epochs only the head changes."""
    images, labels = _blobs(16)
    ds = training.ArrayDataset(images, labels, per_image_normalize)
    opts = training.TrainOptions.from_dict({**TINY, "epochs": 1, "freeze_epochs": 1})
    before = training.build_model(opts).state_dict()
    result = training.train_model(ds, ds, opts, checkpoint_dir=tmp_path)
    after = result.model.state_dict()
    conv = "backbone.conv1.weight"
    torch.testing.assert_close(after[conv], before[conv])
    assert not torch.equal(after["head.1.weight"], before["head.1.weight"])


def test_model_learns_separable_blobs(tmp_path):
    """Check eight epochs on 32 separable images reach validation AUROC > 0.9."""
    images, labels = _blobs(32)
    val_images, val_labels = _blobs(32, seed=1)
    opts = training.TrainOptions.from_dict(
        {**TINY, "epochs": 8, "freeze_epochs": 0, "sampler_positive_fraction": None}
    )
    result = training.train_model(
        training.ArrayDataset(images, labels, per_image_normalize),
        training.ArrayDataset(val_images, val_labels, per_image_normalize),
        opts,
        checkpoint_dir=tmp_path / "ckpt",
        history_path=tmp_path / "history.csv",
    )
    assert result.best_score > 0.9
    assert (tmp_path / "history.csv").exists()
    assert list(result.history.epoch) == list(range(1, 9))


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_training import TINY, _blobs
    from melrepro.methods import training
    from melrepro.methods.transforms import train_transform

    images, labels = _blobs(24)
    ds = training.ArrayDataset(images, labels, train_transform(32))
    val = training.ArrayDataset(*_blobs(16, seed=1))
    opts = training.TrainOptions.from_dict({{**TINY, "mixup_alpha": 0.2}})

    def kill(epoch, row):
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    training.train_model(ds, val, opts, checkpoint_dir={ckpt!r}, on_epoch_end=kill)
    """
)


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    """Check a run SIGKILLed after epoch 2 and resumed ends with the weights of a straight run."""
    from melrepro.methods.transforms import train_transform

    images, labels = _blobs(24)
    opts = training.TrainOptions.from_dict({**TINY, "mixup_alpha": 0.2})

    def datasets():
        return (
            training.ArrayDataset(images, labels, train_transform(32)),
            training.ArrayDataset(*_blobs(16, seed=1)),
        )

    killed_dir = tmp_path / "killed"
    script = _KILL_SCRIPT.format(tests=str(Path(__file__).parent), ckpt=str(killed_dir))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    ckpt = torch.load(killed_dir / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 2
    resumed = training.train_model(*datasets(), opts, checkpoint_dir=killed_dir)
    assert resumed.resumed_from_epoch == 2
    straight = training.train_model(*datasets(), opts, checkpoint_dir=tmp_path / "straight")
    assert straight.resumed_from_epoch == 0
    for name, tensor in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, rtol=0, atol=0)
    cols = ["epoch", "train_loss", "val_loss", "val_auroc"]
    assert resumed.history[cols].equals(straight.history[cols])
    # The last epoch's validation loss is a function of the last epoch's weights: equal above.
    last_resumed = torch.load(killed_dir / "last.pt", map_location="cpu", weights_only=True)
    last_straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    for key in ("epoch", "best_epoch", "best_score", "finished", "fingerprint"):
        assert last_resumed[key] == last_straight[key], key


def test_finished_run_is_not_retrained(tmp_path):
    """Check rerunning a finished run loads it instead of training again."""
    images, labels = _blobs(16)
    ds = training.ArrayDataset(images, labels, per_image_normalize)
    opts = training.TrainOptions.from_dict({**TINY, "epochs": 1})
    first = training.train_model(ds, ds, opts, checkpoint_dir=tmp_path)
    calls = []
    again = training.train_model(
        ds, ds, opts, checkpoint_dir=tmp_path, on_epoch_end=lambda e, r: calls.append(e)
    )
    assert calls == []
    assert again.resumed_from_epoch == 1
    for name, tensor in first.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[name], tensor, rtol=0, atol=0)
    assert again.history.equals(first.history)


def test_history_is_written_after_every_epoch(tmp_path):
    """Check history.csv holds every finished epoch while the run goes on (issue 22: follow a
    training), and the whole history at the end."""
    images, labels = _blobs(16)
    ds = training.ArrayDataset(images, labels, per_image_normalize)
    opts = training.TrainOptions.from_dict({**TINY, "epochs": 3})
    history_path = tmp_path / "out" / "history.csv"
    seen = {}

    def record(epoch, _row):
        seen[epoch] = pd.read_csv(history_path)["epoch"].tolist()

    result = training.train_model(
        ds, ds, opts, checkpoint_dir=tmp_path / "ckpt", history_path=history_path,
        on_epoch_end=record,
    )  # fmt: skip
    assert seen == {1: [1], 2: [1, 2], 3: [1, 2, 3]}
    assert pd.read_csv(history_path).equals(result.history)
    assert not list(history_path.parent.glob("*.tmp"))


def test_finished_checkpoint_keeps_bookkeeping_not_weights(tmp_path):
    """Check a finished run's last.pt drops weights and optimiser state (a fraction of the size
    of an unfinished one), and that without best.pt it is not trusted: the run trains again."""
    images, labels = _blobs(16)
    ds = training.ArrayDataset(images, labels, per_image_normalize)
    opts = training.TrainOptions.from_dict({**TINY, "epochs": 2})
    sizes = {}

    def record(epoch, _row):
        sizes[epoch] = (tmp_path / "last.pt").stat().st_size

    training.train_model(ds, ds, opts, checkpoint_dir=tmp_path, on_epoch_end=record)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert sizes[2] < sizes[1] / 100  # epoch 1: weights (+ optimiser state); 2: bookkeeping
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["finished"]
    assert not {"model", "optimizer", "scheduler", "scaler"} & set(last)
    assert sizes[1] > sum(t.numel() * t.element_size() for t in best["model"].values())
    (tmp_path / "best.pt").unlink()
    calls = []
    again = training.train_model(
        ds, ds, opts, checkpoint_dir=tmp_path, on_epoch_end=lambda e, r: calls.append(e)
    )
    assert calls == [1, 2]
    assert again.resumed_from_epoch == 0


def test_early_stopping_stops_after_patience(tmp_path):
    """Check a metric that never improves (AUROC of a one-class set is NaN) stops at patience.

    Epoch 1 is kept as best; epochs 2 and 3 do not improve, so patience 2 stops after 3 of 10.
    """
    images, labels = _blobs(16)
    ds = training.ArrayDataset(images, labels, per_image_normalize)
    one_class = training.ArrayDataset(images[labels == 0], labels[labels == 0], per_image_normalize)
    opts = training.TrainOptions.from_dict({**TINY, "epochs": 10, "early_stopping_patience": 2})
    result = training.train_model(ds, one_class, opts, checkpoint_dir=tmp_path)
    assert list(result.history.epoch) == [1, 2, 3]
    assert result.best_epoch == 1
    assert (tmp_path / "best.pt").exists()


def test_choose_device_cuda_without_gpu_fails(caplog):
    """Check an explicit 'cuda' request fails loudly when no GPU exists; 'auto' falls back and
    says so in the log; an unknown name is refused."""
    from melrepro.methods.devices import choose_device

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="cuda"):
        choose_device("cuda")
    with caplog.at_level("INFO", logger="melrepro.methods.devices"):
        assert choose_device("auto").type == "cpu"
    assert "chose cpu" in caplog.text
    with pytest.raises(ValueError, match="unknown device"):
        choose_device("tpu")


def test_predict_returns_probabilities_in_order(tmp_path):
    """Check predict gives one probability in [0, 1] per item, in dataset order."""
    images, labels = _blobs(10)
    ds = training.ArrayDataset(images, labels, per_image_normalize)
    opts = training.TrainOptions.from_dict(TINY)
    model = training.build_model(opts)
    probs = training.predict(model, ds, options=opts)
    assert probs.shape == (10,)
    assert ((probs >= 0) & (probs <= 1)).all()
    first = training.predict(model, torch.utils.data.Subset(ds, [3]), options=opts)
    assert first[0] == pytest.approx(probs[3], abs=1e-5)


def test_multiclass_with_metadata_trains_and_predicts_softmax(tmp_path):
    """Check the CE path with a metadata head: one epoch runs and rows of probabilities sum to 1."""
    images, _ = _blobs(24)
    labels = np.arange(24) % 3
    meta = np.random.default_rng(0).normal(size=(24, 4)).astype(np.float32)
    ds = training.ArrayDataset(images, labels, per_image_normalize, metadata=meta)
    opts = training.TrainOptions.from_dict(
        {
            **TINY,
            "epochs": 1,
            "loss": "ce",
            "n_classes": 3,
            "n_metadata": 4,
            "sampler_positive_fraction": None,
            "monitor": "val_balanced_accuracy",
        }
    )
    result = training.train_model(ds, ds, opts, checkpoint_dir=tmp_path)
    probs = training.predict(result.model, ds, options=opts)
    assert probs.shape == (24, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert 0.0 <= result.best_score <= 1.0


def test_checkpoint_of_other_data_is_not_resumed(tmp_path):
    """Check a finished checkpoint is ignored when the training data change (regression).

    Snakemake reruns a training job when its inputs change; resuming the old, finished
    checkpoint would silently return a model trained on the old data.
    """
    images, labels = _blobs(16)
    opts = training.TrainOptions.from_dict({**TINY, "epochs": 1})
    ds = training.ArrayDataset(images, labels, per_image_normalize)
    training.train_model(ds, ds, opts, checkpoint_dir=tmp_path)
    changed = images.copy()
    changed[0, 0, 0, 0] ^= 1
    ds2 = training.ArrayDataset(changed, labels, per_image_normalize)
    calls = []
    again = training.train_model(
        ds2, ds2, opts, checkpoint_dir=tmp_path, on_epoch_end=lambda e, r: calls.append(e)
    )
    assert calls == [1]
    assert again.resumed_from_epoch == 0


class _OneBN(torch.nn.Module):
    """A model with one BatchNorm: logits = sum of normalised channel means."""

    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(3)

    def forward(self, x, meta=None):
        return self.bn(x).mean(dim=(2, 3)).sum(1, keepdim=True)


def test_recalibrate_batchnorm_recovers_the_data_statistics():
    """Check precise BN: after recalibration the running mean/var are the training data's.

    16 images of 2x2 px, batches of 4, all batches used: the running mean is the per-channel
    pixel mean of the dataset (momentum None averages the batch means exactly), whatever the
    stale running statistics were before.
    """
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 2, 2, 3), dtype=np.uint8)
    ds = training.ArrayDataset(images, np.array([0, 1] * 8))
    model = _OneBN()
    model.bn.running_mean.fill_(100.0)
    model.bn.running_var.fill_(1e-4)
    model.eval()
    opts = training.TrainOptions(batch_size=4, sampler_positive_fraction=None)
    seen = training.recalibrate_batchnorm(
        model, ds, options=opts, device=torch.device("cpu"), n_batches=4
    )
    assert seen == 16
    expected = images.reshape(-1, 3).mean(0) / 255.0
    np.testing.assert_allclose(model.bn.running_mean.numpy(), expected, rtol=1e-5)
    assert model.bn.momentum == 0.1  # restored
    assert not model.training  # mode restored


def test_last_epoch_monitor_keeps_the_last_epoch(tmp_path):
    """Check monitor 'last_epoch' (milestone 1) returns the weights of the final epoch."""
    train = training.ArrayDataset(*_blobs(32, size=20))
    val = training.ArrayDataset(*_blobs(16, size=20, seed=1))
    opts = training.TrainOptions(
        **{**TINY, "epochs": 3, "freeze_epochs": 0, "accumulation_steps": 1},
        monitor="last_epoch",
        bn_recalibration=2,
    )
    result = training.train_model(train, val, opts, checkpoint_dir=tmp_path)
    assert result.best_epoch == 3
    assert result.history["last_epoch"].tolist() == [1, 2, 3]


def test_model_file_is_the_best_checkpoint_and_outlives_it(tmp_path):
    """Check export_best: the model output holds best.pt's bytes, replaces an older model file, and keeps
    its content when the training core later replaces best.pt (a new file, os.replace)."""
    best = tmp_path / "checkpoints" / "best.pt"
    best.parent.mkdir()
    best.write_bytes(b"epoch 1 weights")
    model = tmp_path / "models" / "model.pt"
    model.parent.mkdir()
    model.write_bytes(b"an older model")
    training.export_best(best.parent, model)
    assert model.read_bytes() == b"epoch 1 weights"
    tmp = best.with_suffix(".pt.tmp")
    tmp.write_bytes(b"epoch 2 weights")
    tmp.replace(best)
    assert model.read_bytes() == b"epoch 1 weights"


def test_write_run_outputs_publishes_predictions_model_and_metrics(tmp_path):
    """Check write_run_outputs after a small real training: the predictions parquet round-trips,
    the model file holds best.pt's weights, and metrics.json holds the paper's metrics first,
    then the run's common keys with their values (a key the paper sets keeps its value)."""
    import json

    import pandas as pd

    images, labels = _blobs(16)
    ds = training.ArrayDataset(images, labels, per_image_normalize)
    opts = training.TrainOptions.from_dict({**TINY, "epochs": 2})
    ckpt = tmp_path / "ckpt"
    result = training.train_model(ds, ds, opts, checkpoint_dir=ckpt)
    probs = training.predict(result.model, ds, options=opts)
    preds = pd.DataFrame({"image_id": [f"im{i}" for i in range(16)], "probability": probs})
    out = tmp_path / "out"
    out.mkdir()
    info = training.write_run_outputs(
        result,
        opts,
        preds,
        predictions_path=tmp_path / "preds" / "deep" / "predictions.parquet",
        checkpoint_dir=ckpt,
        model_path=out / "model.pt",
        metrics_path=out / "metrics.json",
        metrics={"variant": "tiny", "device": "set by the paper"},
    )
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "preds" / "deep" / "predictions.parquet"), preds
    )
    best = torch.load(ckpt / "best.pt", map_location="cpu", weights_only=True)
    model = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert model["epoch"] == best["epoch"] == result.best_epoch
    for name, tensor in best["model"].items():
        assert torch.equal(model["model"][name], tensor), name
    text = (out / "metrics.json").read_text(encoding="utf-8")
    assert text.endswith("}\n")
    written = json.loads(text)
    assert written == json.loads(json.dumps(info, default=str))
    assert list(written) == [
        "variant",
        "device",
        "best_epoch",
        "epochs_run",
        "train_seconds",
        "torch_threads",
        "weights",
        "options",
    ]
    assert written["device"] == "set by the paper"
    assert written["best_epoch"] == result.best_epoch
    assert written["epochs_run"] == 2 == len(result.history)
    assert written["train_seconds"] == pytest.approx(float(result.history["seconds"].sum()))
    assert written["weights"] == result.weights == "random_init"
    assert written["options"] == opts.to_dict()


def _train_tiny(tmp_path, name: str, **options):
    images, labels = _blobs(16)
    val_images, val_labels = _blobs(8, seed=1)
    opts = training.TrainOptions.from_dict(
        {**TINY, "epochs": 2, "freeze_epochs": 0, "sampler_positive_fraction": None, **options}
    )
    return opts, training.train_model(
        training.ArrayDataset(images, labels, per_image_normalize),
        training.ArrayDataset(val_images, val_labels, per_image_normalize),
        opts,
        checkpoint_dir=tmp_path / name,
    )


def test_cpu_channels_last_trains_in_that_layout_reproducibly(tmp_path):
    """Check cpu_channels_last trains the convolutions in channels-last layout on the CPU, gives the
    same weights twice, is part of the fingerprint only when on, and the default stays contiguous."""
    opts, on = _train_tiny(tmp_path, "on", cpu_channels_last=True)
    _, again = _train_tiny(tmp_path, "again", cpu_channels_last=True)
    default_opts, off = _train_tiny(tmp_path, "off")
    assert on.device == "cpu"
    convs = [m for m in on.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert not all(
        c.weight.is_contiguous(memory_format=torch.channels_last)
        for c in off.model.modules()
        if isinstance(c, torch.nn.Conv2d) and c.kernel_size != (1, 1)
    )
    for key, value in on.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[key], value, rtol=0, atol=0)
    assert opts.fingerprint() != default_opts.fingerprint()
    assert (
        default_opts.fingerprint()
        == training.TrainOptions.from_dict(
            {**default_opts.to_dict(), "cpu_channels_last": False}
        ).fingerprint()
    )
