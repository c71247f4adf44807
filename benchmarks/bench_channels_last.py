"""Is a CPU training step faster in channels-last layout? Contiguous vs channels-last, per backbone.

For each backbone at the embedded default's input size, times one Adam training step (forward,
backward, update) on a random batch in both memory layouts, in this process, one right after
the other (best of a few steps, so that load on a shared machine counts little), and prints the step time of each and
their ratio. Goal (issue 20, the default run within 15 minutes on 2 cores): channels-last at
least 1.3x faster for the backbones where ``cpu_channels_last`` is on in config/config.yaml
(gradcam_overlap's VGG16-BN and ResNet50 at 112 px). effnet_ham's EfficientNet-B0 gains too but
stays contiguous (its label-shuffled control moved with the layout, see config/config.yaml);
siim2020's ResNet18 at 32 px is listed as the case where it does not pay. Usage:

    .venv/bin/python benchmarks/bench_channels_last.py [--threads 2] [--steps 4] [--batch 16]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

#: (torchvision model, input size, cpu_channels_last in the default config)
CASES = [
    ("vgg16_bn", 112, True),
    ("resnet50", 112, True),
    ("efficientnet_b0", 64, False),
    ("resnet18", 32, False),
]


def _step_seconds(name: str, size: int, channels_last: bool, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=8)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 8, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters())
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if i:  # the first step allocates and picks kernels
            times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, best of {args.steps}"
    )
    print(
        f"{'backbone':<16} {'px':>4} {'contiguous s':>13} {'channels-last s':>16} {'ratio':>6}  default"
    )
    for name, size, on in CASES:
        contiguous = _step_seconds(name, size, False, args.batch, args.steps)
        last = _step_seconds(name, size, True, args.batch, args.steps)
        print(
            f"{name:<16} {size:>4} {contiguous:>13.3f} {last:>16.3f} {contiguous / last:>6.2f}"
            f"  {'on' if on else 'off'}"
        )


if __name__ == "__main__":
    main()
