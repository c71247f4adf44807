"""Can the loader keep a GPU busy? Loader alone vs training step alone, per training recipe.

For each recipe (backbone at the paper's resolution) prints, measured in this process:

* ``loader (CPU aug)``: images/s of the training DataLoader with the paper's per-image
  augmentation in the workers, and its CPU cost per image (one process);
* ``loader (uint8)``: images/s when the loader only collates cached uint8 images and the
  augmentation runs on the device (``train_model(device_transform=...)``), and that
  augmentation's cost per image on the device here (CPU; on a GPU the pixel work moves there);
* ``step (cpu)``: training-step images/s on the CPU (random init, no AMP);
* with CUDA present (or ``--device cuda``): ``step (cuda)`` with AMP and channels_last, the
  peak GPU memory and the loader/step ratio; ``--device cpu`` runs the same lines on the CPU
  with bf16 autocast (what ``benchmarks/gpu_check.sh`` checks before a GPU ever runs them);
* ``--summary FILE``: one JSON line per recipe (images/s, peak memory, AMP dtype, loader/step
  ratio) appended for ``gpu_check.sh``'s table.

Goal (issue 11): the declared workers feed >= 2,500 images/s at 224 px (an EfficientNet-B0
with AMP on a current data-centre GPU trains at about 2,000). Usage:

    .venv/bin/python benchmarks/bench_training.py [--workers 2] [--n 256] [--recipe effnet_ham]
        [--device auto|cpu|cuda] [--device-batch 64] [--no-cpu-step] [--summary FILE]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from melrepro.methods import training
from melrepro.methods.transforms import train_transform


def _effnet_augmentation(size: int):
    return train_transform(size)


def _dihedral(_size: int):
    from melrepro.papers.gradcam_overlap.datasets import _Dihedral

    return _Dihedral()


def _none(_size: int):
    return None


#: Per training recipe: backbone, the paper's image side, and the per-image augmentation its
#: loader runs every epoch (siim2020's augmented copies are made once, before training).
RECIPES = {
    "effnet_ham": ("efficientnet_b0", 224, _effnet_augmentation),
    "siim2020": ("resnet18", 256, _none),
    "gradcam_overlap_vgg16": ("vgg16", 450, _dihedral),
    "gradcam_overlap_resnet50": ("resnet50", 227, _dihedral),
}


def _rate(fn, n_images: int, repeat: int) -> float:
    """Best images/s over ``repeat`` rounds after a warm-up (robust to other jobs' load)."""
    fn()
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = max(best, n_images / (time.perf_counter() - t0))
    return best


def _drain(loader) -> None:
    for _ in loader:
        pass


def _step_device(choice: str) -> torch.device | None:
    """The device of the AMP step lines: ``auto`` runs them only where CUDA is present."""
    if choice == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else None
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    return torch.device(choice)


def _amp_dtype(device: torch.device) -> torch.dtype:
    """What the training core's ``amp`` picks on a GPU (bf16 where supported, else fp16); the
    CPU's autocast runs bf16."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _mib(value: float | None) -> str:
    return "n/a (CPU)" if value is None else f"{value:.0f} MiB"


def _device_step(model, step, batch, aug, args, size: int, device: torch.device) -> dict:
    """Training steps of ``args.device_batch`` images with AMP (channels_last on CUDA), and the
    device augmentation of a uint8 batch there: images/s, peak GPU memory, AMP dtype."""
    cuda = device.type == "cuda"
    layout = torch.channels_last if cuda else torch.contiguous_format
    dmodel = model.to(device, memory_format=layout)
    optimizer = torch.optim.AdamW(dmodel.parameters(), lr=3e-4)
    dx = torch.randn(args.device_batch, 3, size, size, device=device)
    dx = dx.contiguous(memory_format=layout)
    dy = torch.randint(0, 2, (args.device_batch,), device=device)
    dtype = _amp_dtype(device)
    rounds = 10 if cuda else 1  # a GPU step is too short to time alone

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def steps():
        for _ in range(rounds):
            step(dmodel, optimizer, dx, dy, dtype)
        sync()

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    rate = _rate(steps, rounds * args.device_batch, args.repeat)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    dbatch = batch.to(device)

    def device_aug():
        training.augment_on_device(dbatch, aug)
        sync()

    return {
        "device": device.type,
        "amp_dtype": str(dtype).removeprefix("torch."),
        "device_batch": args.device_batch,
        "images_per_s": rate,
        "peak_memory_mib": peak,
        "device_aug_images_per_s": _rate(device_aug, args.batch, args.repeat),
    }


def bench_recipe(name: str, args: argparse.Namespace) -> None:
    backbone, size, augmentation = RECIPES[name]
    size = args.size or size
    rng = np.random.default_rng(0)
    # The cache holds images a little larger than the crop (cache resolution max<ceil(4/3 S)>).
    side = int(size * 1.15)
    images = rng.integers(0, 255, (args.n, side, side, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, args.n)
    aug = augmentation(size)
    ds = training.ArrayDataset(images, labels, aug)
    if aug is None:  # the loader then only scales to [0, 1]; so does the "device" path

        def aug(image):
            return image.to(torch.float32) / 255.0

    n_used = (args.n // args.batch) * args.batch

    def loader(dataset, workers):
        # The training core's own loader (built once per run, persistent workers).
        opts = training.TrainOptions(
            sampler_positive_fraction=None, num_workers=workers, device="cpu"
        )
        built = training.TrainLoader(dataset, args.batch, options=opts, labels=labels)
        return lambda: _drain(built.epoch(0))

    cpu_aug = loader(ds, args.workers)
    one_proc = loader(ds, 0)
    raw = loader(training.RawImages(ds), args.workers)
    t0 = time.perf_counter()
    first = loader(training.RawImages(ds), args.workers)
    first()
    r_first = n_used / (time.perf_counter() - t0)
    r_aug = _rate(cpu_aug, n_used, args.repeat)
    r_one = _rate(one_proc, n_used, 1)
    r_raw = _rate(raw, n_used, args.repeat)
    batch = torch.from_numpy(images[: args.batch]).permute(0, 3, 1, 2).contiguous()
    r_dev = _rate(lambda: training.augment_on_device(batch, aug), args.batch, args.repeat)

    opts = training.TrainOptions(backbone=backbone, device="cpu")
    model = training.build_model(opts)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    loss_fn = training.make_loss(opts)
    x = torch.randn(args.step_batch, 3, size, size)
    y = torch.randint(0, 2, (args.step_batch,))

    def step(model, optimizer, x, y, amp_dtype=None):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = loss_fn(model(x).squeeze(-1).float(), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {float(loss)} (AMP {amp_dtype})")
        loss.backward()
        optimizer.step()

    print(f"[{name}] {backbone} at {size} px, batch {args.batch}, workers {args.workers}")
    print(f"  loader (CPU aug)   {r_aug:8.1f} img/s   CPU cost {1000 / r_one:6.2f} ms/img")
    print(f"  loader (uint8)     {r_raw:8.1f} img/s   device aug here {1000 / r_dev:6.2f} ms/img")
    print(f"  uint8, 1st epoch   {r_first:8.1f} img/s   (worker start-up; later epochs reuse them)")
    if not args.no_cpu_step:
        r_step = _rate(lambda: step(model, optimizer, x, y), args.step_batch, 1)
        print(f"  step (cpu)         {r_step:8.1f} img/s")
    device = _step_device(args.device)
    if device is not None:
        row = _device_step(model, step, batch, aug, args, size, device)
        print(
            f"  step ({device.type}, AMP {row['amp_dtype']}) {row['images_per_s']:8.1f} img/s   "
            f"device aug {1000 / row['device_aug_images_per_s']:6.3f} ms/img   peak memory "
            f"{_mib(row['peak_memory_mib'])}"
        )
        ratio = r_raw / row["images_per_s"]
        print(f"  uint8 loader / {device.type} step {ratio:6.2f}x  (goal >= 1.25)")
        if args.summary:
            row.update(recipe=name, backbone=backbone, size=size, loader_images_per_s=r_raw)
            row["loader_step_ratio"] = ratio
            with open(args.summary, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
    goal = "met" if r_raw >= 2500 else "NOT met"
    print(
        f"  goal 2,500 img/s fed by {args.workers} workers at {size} px: {goal} "
        f"({r_raw:.0f} img/s, uint8)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=[*RECIPES, "all"], default="effnet_ham")
    parser.add_argument(
        "--size", type=int, default=None, help="image side (default: the paper's of each recipe)"
    )
    parser.add_argument("--n", type=int, default=256, help="images per epoch (default 256)")
    parser.add_argument("--batch", type=int, default=32, help="loader batch (default 32)")
    parser.add_argument("--step-batch", type=int, default=8, help="CPU step batch (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="loader workers (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds, best kept (default 3)")
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="device of the AMP step lines (auto: CUDA when present, else none)",
    )
    parser.add_argument(
        "--device-batch", type=int, default=64, help="AMP step batch on the device (default 64)"
    )
    parser.add_argument("--no-cpu-step", action="store_true", help="skip the fp32 CPU step line")
    parser.add_argument("--summary", help="append one JSON line per recipe to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in RECIPES if args.recipe == "all" else [args.recipe]:
        bench_recipe(name, args)


if __name__ == "__main__":
    main()
