"""What does precise-BN recalibration cost? Recalibration vs one training epoch, same process.

effnet_ham's default recipe recomputes BatchNorm statistics from ``bn_recalibration`` training
batches before every validation (config/config.yaml, issue 12). This prints the seconds of one
training epoch of EfficientNet-B0 on ``--n`` images and of one recalibration, and their ratio
(goal <= 0.2 at the default 4 batches of 16 against 10 batches of training). Usage:

    .venv/bin/python benchmarks/bench_bn_recalibration.py [--size 64] [--batches 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from melrepro.methods import training
from melrepro.methods.transforms import train_transform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side (default 64)")
    parser.add_argument("--n", type=int, default=160, help="training images (default 160)")
    parser.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--batches", type=int, default=4, help="recalibration batches")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (args.n, args.size, args.size, 3), dtype=np.uint8)
    ds = training.ArrayDataset(images, rng.integers(0, 2, args.n), train_transform(args.size))
    val = training.ArrayDataset(images[:16], rng.integers(0, 2, 16))
    opts = training.TrainOptions(
        device="cpu", epochs=1, freeze_epochs=0, batch_size=args.batch, accumulation_steps=1
    )
    model = training.build_model(opts)
    device = torch.device("cpu")

    def epoch() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            training.train_model(ds, val, opts, checkpoint_dir=tmp)

    def recalibrate() -> None:
        training.recalibrate_batchnorm(
            model, ds, options=opts, device=device, n_batches=args.batches
        )

    best = {"epoch": float("inf"), "recalibrate": float("inf")}
    for _ in range(args.repeat):  # interleaved, best of: robust to other jobs on the cores
        for name, fn in (("epoch", epoch), ("recalibrate", recalibrate)):
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    ratio = best["recalibrate"] / best["epoch"]
    print(f"size {args.size}px, {args.n} images, batch {args.batch}, {args.batches} batches")
    print(f"one training epoch (with validation of 16): {best['epoch']:.2f} s")
    print(f"one recalibration: {best['recalibrate']:.2f} s; ratio {ratio:.3f} (goal <= 0.2)")


if __name__ == "__main__":
    main()
