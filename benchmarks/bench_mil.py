"""Memory and speed of the gcn_mil bag pipeline, each against a reference measured here.

Run: ``.venv/bin/python benchmarks/bench_mil.py [--threads 1] [--quick]``

1. Peak memory of reading every 224-px block of a 6688×4439 image (the largest ISIC 2017 size)
   through :func:`melrepro.methods.mil.block_batches`, against the image itself and against the naive
   way (every block copied at once).
2. Backbone throughput (blocks/s) of :class:`melrepro.methods.mil.BlockEncoder` at the default working
   block size (32 px) and at the paper's 224 px, against a bare torchvision ResNet18 on a ready
   float tensor (ratio ~1 means block extraction and normalisation cost nothing).
3. Eq. 1 adjacency with a k-d tree against the dense distance matrix, on the stride-50 grid of
   the same image (the largest bag the rule can produce).
4. One GCN layer (forward + backward) on an Eq. 1 bag graph: the CSR sparse-matmul path that
   :class:`melrepro.methods.mil.GCNMIL` uses against GCNConv's default scatter over ``edge_index``.
5. The default run's wall time per rule, from Snakemake's benchmark files when present.
"""

from __future__ import annotations

import argparse
import csv
import glob
import time
import tracemalloc
from functools import partial

import numpy as np
import torch
import torchvision

from melrepro.methods import mil


def _peak(fn) -> tuple[int, object]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    out = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, out


def bench_memory() -> None:
    height, width, k = 4439, 6688, 224
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    coords = mil.block_grid(height, width, block_size=k, stride=mil.stride_for_height(height))

    def ours() -> int:
        total = 0
        for batch in mil.block_batches(image, coords, k, batch_size=64):
            total += int(batch[:, 0, 0, 0].sum())
        return total

    def naive() -> int:
        blocks = np.stack([image[y : y + k, x : x + k] for y, x in coords])
        return int(blocks[:, 0, 0, 0].sum())

    peak_ours, a = _peak(ours)
    peak_naive, b = _peak(naive)
    assert a == b
    mb = 1024**2
    print(
        f"[memory] {width}x{height} image {image.nbytes / mb:.0f} MiB, {len(coords)} blocks of {k}px: "
        f"peak extra {peak_ours / mb:.1f} MiB with block_batches (x{peak_ours / image.nbytes:.2f} "
        f"of the image) vs {peak_naive / mb:.0f} MiB all blocks at once "
        f"(ratio naive/ours {peak_naive / peak_ours:.1f})"
    )
    small = np.zeros((767, 1022, 3), np.uint8)
    grid = mil.block_grid(767, 1022, block_size=k, stride=50)
    all_blocks = len(grid) * k * k * 3
    print(
        f"[memory] 1022x767 at stride 50: {len(grid)} blocks would be {all_blocks / mb:.0f} MiB "
        f"copied, {all_blocks / small.nbytes:.0f}x the {small.nbytes / mb:.1f} MiB image"
    )


def _throughput(fn, n_per_call: int, seconds: float) -> float:
    fn()
    started, n = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        fn()
        n += n_per_call
    return n / (time.perf_counter() - started)


def bench_backbone(seconds: float) -> None:
    torch.manual_seed(0)
    encoder = mil.BlockEncoder(pretrained=False).eval()
    reference = torchvision.models.resnet18(weights=None).eval()
    reference.fc = torch.nn.Identity()
    rng = np.random.default_rng(0)
    for k, batch in ((32, 128), (224, 16)):
        image = rng.integers(0, 256, (k * 8, k * 8, 3), dtype=np.uint8)
        coords = mil.block_grid(*image.shape[:2], block_size=k, stride=k // 2)[:batch]
        ready = torch.rand(len(coords), 3, k, k)

        def ours(image=image, coords=coords, k=k, batch=batch) -> None:
            with torch.inference_mode():
                for blocks in mil.block_batches(image, coords, k, batch):
                    encoder(torch.from_numpy(blocks))

        def ref(ready=ready) -> None:
            with torch.inference_mode():
                reference(ready)

        rate_ours = _throughput(ours, len(coords), seconds)
        rate_ref = _throughput(ref, len(coords), seconds)
        print(
            f"[backbone] k={k:3d}: {rate_ours:7.1f} blocks/s (extract + normalise + ResNet18) vs "
            f"{rate_ref:7.1f} blocks/s bare ResNet18 on ready tensors: ratio {rate_ours / rate_ref:.2f}"
        )


def bench_adjacency() -> None:
    k = 224
    coords = mil.block_grid(4439, 6688, block_size=k, stride=50)
    centres = mil.block_centres(coords, k)
    started = time.perf_counter()
    edges = mil.block_adjacency(centres, k)
    t_ours = time.perf_counter() - started
    sub = centres[:4000]  # the dense matrix of all blocks would need GBs
    started = time.perf_counter()
    dist = np.linalg.norm(sub[:, None] - sub[None], axis=-1)
    dense = np.argwhere((dist <= np.sqrt(2) * k) & (dist > 0))
    t_dense = (time.perf_counter() - started) * (len(centres) / len(sub)) ** 2
    print(
        f"[adjacency] {len(centres)} blocks, {edges.shape[1]} edges: k-d tree {t_ours:.2f}s vs "
        f"dense distances ~{t_dense:.1f}s (extrapolated from {len(sub)} blocks, "
        f"{len(dense)} edges): ratio {t_dense / t_ours:.0f}x"
    )


def bench_gcn_layer(seconds: float) -> None:
    from torch_geometric.nn import GCNConv

    # The default run's middle band: a 1500x2000 image at scale 1/7, k = 32, stride 17, and
    # the paper's smallest band at full resolution: 767x1022, k = 224, stride 50.
    for height, width, k, stride in ((214, 286, 32, 17), (767, 1022, 224, 50)):
        coords = mil.block_grid(height, width, block_size=k, stride=stride)
        edge_index = torch.from_numpy(mil.block_adjacency(mil.block_centres(coords, k), k))
        n = len(coords)
        adj = mil._csr_adjacency(edge_index, n)
        conv = GCNConv(512, 512)
        x = torch.randn(n, 512)

        def step(graph, conv=conv, x=x) -> None:
            conv(x, graph).sum().backward()

        rate_csr = _throughput(partial(step, adj), 1, seconds)
        rate_scatter = _throughput(partial(step, edge_index), 1, seconds)
        print(
            f"[gcn layer] {n} blocks, {edge_index.shape[1] / n:.0f} neighbours each: "
            f"CSR {rate_csr:.1f} vs edge_index scatter {rate_scatter:.1f} steps/s: "
            f"ratio {rate_csr / rate_scatter:.1f}"
        )


def report_default_run() -> None:
    """Wall and CPU seconds of every gcn_mil job (CPU time is what an idle machine would need)."""
    rows = []
    for path in sorted(glob.glob("benchmarks/results/*gcn_mil*/*.tsv")):
        with open(path, encoding="utf-8") as handle:
            record = next(csv.DictReader(handle, delimiter="\t"))
        name = "/".join(path.split("/")[-2:])
        rows.append((name, float(record["s"]), float(record["cpu_time"])))
    if not rows:
        print("[default run] no benchmarks/results/*gcn_mil* files yet: run the workflow first")
        return
    for name, wall, cpu in rows:
        print(f"[default run] {name:45s} wall {wall:7.1f} s  cpu {cpu:6.1f} s")
    cpu_total = sum(cpu for _, _, cpu in rows)
    print(
        f"[default run] total cpu {cpu_total:.0f} s, i.e. ~{cpu_total / 2:.0f} s of wall time on "
        f"2 idle cores (sum of wall times {sum(w for _, w, _ in rows):.0f} s on the shared machine)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per speed measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench_memory()
    bench_backbone(args.seconds)
    bench_adjacency()
    bench_gcn_layer(args.seconds)
    report_default_run()


if __name__ == "__main__":
    main()
