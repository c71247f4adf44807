"""Training-core details that matter on a GPU, tested on the CPU: resume across devices (empty
GradScaler state), weights-only checkpoints, threads shared with loader workers, augmentation
on the device."""

import numpy as np
import pytest
import torch

from melrepro.methods import training
from melrepro.methods.transforms import train_transform

TINY = dict(
    backbone="resnet18",
    epochs=2,
    batch_size=8,
    eval_batch_size=16,
    accumulation_steps=1,
    freeze_epochs=0,
    lr=1e-3,
    threads=1,
    device="cpu",
    seed=3,
)


def _data(n: int = 24, size: int = 32) -> training.ArrayDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 120, (n, size, size, 3), dtype=np.uint8)
    labels = np.arange(n) % 2
    images[labels == 1, 8:24, 8:24] = 250
    return images, labels


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_cpu_checkpoint_resumes_into_an_enabled_grad_scaler(tmp_path, caplog):
    """Check a checkpoint of a CPU run (disabled GradScaler, empty state) resumes where an
    enabled scaler waits (an fp16 GPU run; loading {} used to raise), and the reverse, and that
    the device change is logged."""
    images, labels = _data()
    ds = training.ArrayDataset(images, labels)
    opts = training.TrainOptions.from_dict({**TINY, "epochs": 1})
    training.train_model(ds, ds, opts, checkpoint_dir=tmp_path)
    ckpt = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["scaler"] == {}
    assert ckpt["execution"] == {"device": "cpu", "amp": False, "num_workers": 0}

    fingerprint = ckpt["fingerprint"]
    run = training._setup(opts, fingerprint)
    run.scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    assert training._resume(run, tmp_path / "last.pt") == (1, True)
    assert run.scaler.get_scale() == 1024.0  # the fresh scaler was kept

    # Reverse: a GPU-like checkpoint (enabled scaler state, amp on cuda) into a CPU run.
    ckpt["scaler"] = run.scaler.state_dict()
    ckpt["execution"] = {"device": "cuda", "amp": True, "num_workers": 4}
    torch.save(ckpt, tmp_path / "last.pt")
    cpu_run = training._setup(opts, fingerprint)
    with caplog.at_level("WARNING", logger="melrepro.methods.training"):
        assert training._resume(cpu_run, tmp_path / "last.pt") == (1, True)
    assert "not bit-identical" in caplog.text
    assert not cpu_run.scaler.is_enabled()


def test_checkpoints_load_with_weights_only(tmp_path):
    """Check last.pt and best.pt hold only what torch.load(weights_only=True) accepts (no
    pickled numpy scalars), so every load in the core can refuse arbitrary code."""
    images, labels = _data()
    ds = training.ArrayDataset(images, labels)
    opts = training.TrainOptions.from_dict(TINY)
    training.train_model(ds, ds, opts, checkpoint_dir=tmp_path)
    for name in ("last.pt", "best.pt"):
        torch.load(tmp_path / name, map_location="cpu", weights_only=True)
    model = training.load_model(tmp_path / "best.pt", opts)
    assert isinstance(model, training.CNNClassifier)


def test_torch_threads_leave_room_for_loader_workers():
    """Check a job of 4 threads with 3 loader workers runs torch on 1 thread (4 + 3 > 4 before)."""
    opts = training.TrainOptions.from_dict({**TINY, "threads": 4, "num_workers": 3})
    training._setup(opts, "x")
    assert torch.get_num_threads() == 1
    opts = training.TrainOptions.from_dict({**TINY, "threads": 2, "num_workers": 0})
    training._setup(opts, "x")
    assert torch.get_num_threads() == 2


def test_augmentation_on_the_device_draws_per_image():
    """Check augment_on_device gives each image of a batch its own random draw (two copies of
    one image come out different) and the shapes and dtype of the loader path."""
    images, _ = _data(4, size=48)
    x = torch.from_numpy(np.stack([images[0]] * 4)).permute(0, 3, 1, 2).contiguous()
    torch.manual_seed(0)
    out = training.augment_on_device(x, train_transform(32))
    assert out.shape == (4, 3, 32, 32)
    assert out.dtype == torch.float32
    assert not torch.allclose(out[0], out[1])
    # Per-image normalisation came last: every image has mean 0, std 1.
    assert torch.allclose(out.mean(dim=(1, 2, 3)), torch.zeros(4), atol=1e-4)


def test_training_with_device_augmentation_is_reproducible(tmp_path):
    """Check a run augmenting on the device trains (loss falls or AUROC above chance) and
    a second run from scratch gives the same weights (seeded per epoch like the loader path)."""
    images, labels = _data(32, size=40)
    ds = training.ArrayDataset(images, labels)
    val = training.ArrayDataset(images, labels)
    opts = training.TrainOptions.from_dict({**TINY, "epochs": 3})
    results = [
        training.train_model(
            ds, val, opts, checkpoint_dir=tmp_path / str(i), device_transform=train_transform(32)
        )
        for i in range(2)
    ]
    a, b = (r.model.state_dict() for r in results)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert results[0].history["train_loss"].nunique() == 3
