"""Does data loading starve the model? Loader alone vs model step alone vs both, on CPU.

Prints images/s of (a) the training DataLoader alone (in-memory cached images, the paper's
augmentations and per-image normalisation), (b) an EfficientNet-B0 training step on ready
tensors, (c) loader + step, and the ratios loader/step (goal >= 3) and (c)/(b) (goal close to 1),
all measured in this process. Usage:

    .venv/bin/python benchmarks/bench_training.py [--size 64] [--threads 2] [--workers 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from melrepro.methods import training
from melrepro.methods.transforms import train_transform


def _rates(fns: dict, n_images: int, repeat: int) -> dict[str, float]:
    """Best images/s of each function over ``repeat`` interleaved rounds.

    Interleaving and keeping the best round makes the ratios robust to other jobs sharing the
    cores (the slowest rounds are the ones disturbed).
    """
    for fn in fns.values():
        fn()  # warm-up
    best = dict.fromkeys(fns, 0.0)
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = max(best[name], n_images / (time.perf_counter() - t0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side (default 64)")
    parser.add_argument("--n", type=int, default=160, help="images per epoch (default 160)")
    parser.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--workers", type=int, default=0, help="loader workers (default 0)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (args.n, args.size, args.size, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, args.n)
    ds = training.ArrayDataset(images, labels, train_transform(args.size))
    loader = DataLoader(
        ds, batch_size=args.batch, shuffle=True, num_workers=args.workers, drop_last=True
    )
    n_used = (args.n // args.batch) * args.batch

    opts = training.TrainOptions(device="cpu")
    model = training.build_model(opts)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    loss_fn = training.make_loss(opts)
    ready = [
        (torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 2, (args.batch,)))
        for _ in range(args.n // args.batch)
    ]

    def step(x, y):
        optimizer.zero_grad()
        loss_fn(model(x).squeeze(-1), y).backward()
        optimizer.step()

    def loader_only():
        for _ in loader:
            pass

    def step_only():
        for x, y in ready:
            step(x, y)

    def both():
        for x, y, _ in loader:
            step(x, y)

    rates = _rates(
        {"loader": loader_only, "step": step_only, "both": both}, n_used, repeat=args.repeat
    )
    r_loader, r_step, r_both = rates["loader"], rates["step"], rates["both"]
    print(f"size={args.size} batch={args.batch} threads={args.threads} workers={args.workers}")
    print(f"loader alone      {r_loader:8.1f} img/s")
    print(f"model step alone  {r_step:8.1f} img/s")
    print(f"loader + step     {r_both:8.1f} img/s")
    print(f"loader / step     {r_loader / r_step:8.1f}x  (goal >= 3)")
    print(f"(loader+step) / step {r_both / r_step:5.2f}  (1.0 = loading costs nothing)")


if __name__ == "__main__":
    main()
