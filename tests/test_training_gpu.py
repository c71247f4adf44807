"""Training-core details that matter on a GPU, tested on the CPU: resume across devices (empty
GradScaler state), weights-only checkpoints, threads shared with loader workers, loaders built
once with persistent workers and a worker-independent order, augmentation on the device."""

import numpy as np
import pytest
import torch

from melrepro.methods import training
from melrepro.methods.training import data
from melrepro.methods.training.checkpoint import _resume
from melrepro.methods.training.loop import _setup
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


class _Stopped(Exception):
    """Raised by :func:`_stop_after`: a run that ends with its checkpoint written, unfinished."""


def _stop_after(stop_epoch: int):
    """An ``on_epoch_end`` that stops the run once epoch ``stop_epoch``'s last.pt is written."""

    def stop(epoch, _row):
        if epoch == stop_epoch:
            raise _Stopped

    return stop


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
    opts = training.TrainOptions.from_dict({**TINY, "epochs": 2})

    with pytest.raises(_Stopped):  # an unfinished run: last.pt keeps the resume state
        training.train_model(ds, ds, opts, checkpoint_dir=tmp_path, on_epoch_end=_stop_after(1))
    ckpt = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["scaler"] == {}
    assert ckpt["execution"] == {"device": "cpu", "amp": False, "augmentation": "main process"}

    fingerprint = ckpt["fingerprint"]
    run = _setup(opts, fingerprint)
    run.scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    assert _resume(run, tmp_path / "last.pt") == (1, False)
    assert run.scaler.get_scale() == 1024.0  # the fresh scaler was kept

    # Reverse: a GPU-like checkpoint (enabled scaler state, amp on cuda) into a CPU run.
    ckpt["scaler"] = run.scaler.state_dict()
    ckpt["execution"] = {"device": "cuda", "amp": True, "augmentation": "per-item seeds"}
    torch.save(ckpt, tmp_path / "last.pt")
    cpu_run = _setup(opts, fingerprint)
    with caplog.at_level("WARNING", logger="melrepro.methods.training.checkpoint"):
        assert _resume(cpu_run, tmp_path / "last.pt") == (1, False)
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
    _setup(opts, "x")
    assert torch.get_num_threads() == 1
    opts = training.TrainOptions.from_dict({**TINY, "threads": 2, "num_workers": 0})
    _setup(opts, "x")
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


@pytest.mark.slow
def test_compiled_model_trains_to_the_same_checkpoint_format(tmp_path):
    """Check compile=True trains, keeps the fingerprint of the same options uncompiled, and
    writes a best.pt that an uncompiled model loads (state_dict keys unchanged)."""
    images, labels = _data(16)
    ds = training.ArrayDataset(images, labels)
    opts = training.TrainOptions.from_dict({**TINY, "epochs": 1, "compile": True})
    plain = training.TrainOptions.from_dict({**TINY, "epochs": 1})
    assert opts.fingerprint() == plain.fingerprint()
    result = training.train_model(ds, ds, opts, checkpoint_dir=tmp_path)
    assert np.isfinite(result.history["train_loss"]).all()
    model = training.load_model(tmp_path / "best.pt", plain)
    assert isinstance(model, training.CNNClassifier)


def _augmented(n: int = 24, size: int = 40):
    images, labels = _data(n, size=size)
    return (
        training.ArrayDataset(images, labels, train_transform(32)),
        training.ArrayDataset(images[:16, 4:36, 4:36], labels[:16]),
    )


def _weights(result) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in result.model.state_dict().items()}


def test_loaders_are_built_once_per_training_with_persistent_workers(tmp_path, monkeypatch):
    """Check a 3-epoch run with a loader worker builds two DataLoaders (training, validation),
    not one per epoch and per validation, and that both keep their workers alive."""
    built = []

    class CountingLoader(data.DataLoader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(data, "DataLoader", CountingLoader)
    train, val = _augmented()
    opts = training.TrainOptions.from_dict(
        {**TINY, "epochs": 3, "num_workers": 1, "bn_recalibration": 1}
    )
    training.train_model(train, val, opts, checkpoint_dir=tmp_path)
    assert len(built) == 2
    assert all(loader.persistent_workers for loader in built)


def test_worker_loading_is_independent_of_the_worker_count_and_resumes_exactly(tmp_path):
    """Check per-item augmentation seeds: 1 and 2 loader workers train to the same weights, and
    a run stopped after epoch 1 with 2 workers and resumed with 1 ends with the weights of the
    straight run (persistent workers would otherwise carry their random state across epochs)."""
    train, val = _augmented()
    opts = {**TINY, "epochs": 3, "bn_recalibration": 1}
    runs = {}
    for workers in (1, 2):
        o = training.TrainOptions.from_dict({**opts, "num_workers": workers})
        runs[workers] = training.train_model(train, val, o, checkpoint_dir=tmp_path / str(workers))
    a, b = _weights(runs[1]), _weights(runs[2])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[1].history["train_loss"].equals(runs[2].history["train_loss"])

    stopped = tmp_path / "stopped"
    with pytest.raises(_Stopped):
        training.train_model(
            train,
            val,
            training.TrainOptions.from_dict({**opts, "num_workers": 2}),
            checkpoint_dir=stopped,
            on_epoch_end=_stop_after(1),
        )
    resumed = training.train_model(
        train,
        val,
        training.TrainOptions.from_dict({**opts, "num_workers": 1}),
        checkpoint_dir=stopped,
    )
    assert resumed.resumed_from_epoch == 1
    c = _weights(resumed)
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_worker_items_are_augmented_from_their_own_seed():
    """Check SeededItems: the same (seed, index) gives the same augmented image, another seed a
    different one, and the caller's global random stream is left untouched."""
    train, _ = _augmented(4)
    items = training.SeededItems(train)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first, label, _ = items[(7, 2)]
    assert torch.rand(1) == before  # global stream not consumed
    again, _, _ = items[(7, 2)]
    other, _, _ = items[(8, 2)]
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert label == train.labels[2]


class _InputBatchNorm(torch.nn.Module):
    """A 'model' that is one BatchNorm of its input: its running mean is the input's mean."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(3)

    def forward(self, x, meta=None):
        return self.bn(x).mean(dim=(2, 3))


def test_precise_bn_sees_the_device_augmented_inputs():
    """Check recalibration with a uint8 training loader applies the device augmentation first:
    the statistics are those of the augmented inputs the model trains on (here a constant 5),
    not of raw pixels / 255."""
    images = np.full((16, 8, 8, 3), 200, dtype=np.uint8)
    ds = training.ArrayDataset(images, np.arange(16) % 2)
    opts = training.TrainOptions.from_dict({**TINY, "batch_size": 4})
    loader = training.TrainLoader(training.RawImages(ds), 4, options=opts, labels=ds.labels)
    model = _InputBatchNorm()
    seen = training.recalibrate_batchnorm(
        model,
        ds,
        options=opts,
        device=torch.device("cpu"),
        n_batches=2,
        loader=loader,
        device_transform=lambda image: torch.full(image.shape, 5.0),
    )
    assert seen == 8
    torch.testing.assert_close(model.bn.running_mean, torch.full((3,), 5.0))
    training.recalibrate_batchnorm(model, ds, options=opts, device=torch.device("cpu"), n_batches=2)
    torch.testing.assert_close(model.bn.running_mean, torch.full((3,), 200 / 255))


def test_augments_on_device_follows_the_setting():
    """Check augment_on: auto follows the device (the CPU here: in the loader), loader and
    device are taken as said, anything else is refused with the valid names."""
    assert training.augments_on_device("auto", "cpu") is False
    assert training.augments_on_device("auto", "auto") is torch.cuda.is_available()
    assert training.augments_on_device("device", "cpu") is True
    assert training.augments_on_device("loader", "auto") is False
    with pytest.raises(ValueError, match="'auto', 'loader', 'device'"):
        training.augments_on_device("gpu", "cpu")
