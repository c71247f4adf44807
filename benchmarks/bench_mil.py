"""Memory and speed of the gcn_mil bag pipeline, each against a reference measured here.

Run: ``.venv/bin/python benchmarks/bench_mil.py [--threads 1] [--memory | --extraction]``

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
5. Feature extraction throughput (blocks/s) on the same images in the same process: the numpy /
   scipy data path (the embedded default) against the tensor path (torchvision rotation, flips,
   ``unfold``), on CPU, and on CUDA with autocast and channels_last when a GPU is present.
   ``--extraction --device cuda --quick --summary FILE`` is what ``benchmarks/gpu_check.sh``
   runs: one device, the default geometry only, a JSON line per geometry (blocks/s, peak GPU
   memory, autocast dtype).
6. The default run's wall time per rule, from Snakemake's benchmark files when present.
7. ``--memory``: peak memory of extraction, training and evaluation (each in a fresh process) at
   1x, 4x and 16x the default run's bag count, fitted linearly against the bytes of features
   involved and extrapolated to the real run (23,536 DR bags x 8 views, 200-700 blocks each);
   the mem_mb of config/isic.yaml must cover the printed figures.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import glob
import json
import multiprocessing
import tempfile
import threading
import time
import tracemalloc
from functools import partial
from pathlib import Path

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
    for path in sorted(glob.glob("benchmarks/results/*gcn_mil*/**/*.tsv", recursive=True)):
        with open(path, encoding="utf-8") as handle:
            record = next(csv.DictReader(handle, delimiter="\t"))
        name = path.removeprefix("benchmarks/results/")
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


# --------------------------------------------------------------------------- extraction speed


def _extraction_images(n: int, height: int = 767, width: int = 1022) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return [
        np.roll(np.kron(base, np.ones((8, 8, 1), np.uint8))[:height, :width], i, 0)
        for i in range(n)
    ]


def _autocast_name(context) -> str:
    """The dtype of a features._autocast context ('off' when it is none)."""
    if isinstance(context, contextlib.nullcontext):
        return "off"
    return str(context.fast_dtype).removeprefix("torch.")


def bench_extraction(
    images: int,
    device: str | None = None,
    *,
    geometries: int = 2,
    summary: str | None = None,
) -> None:
    """Blocks/s of DR rotation + dihedral view + block cutting + ResNet18, both data paths.

    ``geometries`` = 1 measures the default run's geometry only; ``summary`` appends a JSON line
    per geometry and device (the tensor path's blocks/s, peak GPU memory, autocast dtype)."""
    from melrepro.papers.gcn_mil.features import _autocast, _bag_views, _feature_device_path
    from melrepro.papers.gcn_mil.options import BagOptions

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if device:
        devices = [device]
    # The default run's working geometry (scale 1/7: k = 32, stride 7 on 146x110 images) and the
    # paper's (k = 224, stride 50 on 1022x767), two rotations and two views per image.
    for label, k, stride, shape in (
        ("default 1/7", 32, 7, (110, 146)),
        ("paper 1/1", 224, 50, (767, 1022)),
    )[:geometries]:
        pics = _extraction_images(images, *shape)
        angles, views = [0.0, 18.0], [0, 1]
        for dev_name in devices:
            dev = torch.device(dev_name)
            torch.manual_seed(0)
            encoder = mil.BlockEncoder().to(dev).eval()
            if dev.type == "cuda":
                encoder = encoder.to(memory_format=torch.channels_last)
                torch.cuda.reset_peak_memory_stats(dev)
            rates = {}
            for path in ("cpu", "device"):
                options = BagOptions(data_path=path, batch_size=256 if dev.type == "cuda" else 64)
                on_device = _feature_device_path(options, dev)
                amp = _autocast_name(_autocast(options, dev))
                n, started = 0, time.perf_counter()
                for image in pics:
                    for _, _, oriented in _bag_views(image, angles, views, on_device, dev):
                        hw = tuple(oriented.shape[-2:] if on_device else oriented.shape[:2])
                        coords = mil.block_grid(*hw, block_size=k, stride=stride)
                        with torch.inference_mode(), _autocast(options, dev):
                            if on_device:
                                batches = mil.tensor_block_batches(
                                    oriented, coords, k, options.batch_size
                                )
                                out = [encoder(b, channels_first=True) for b in batches]
                            else:
                                batches = mil.block_batches(oriented, coords, k, options.batch_size)
                                out = [encoder(torch.from_numpy(b).to(dev)) for b in batches]
                            features = torch.cat(out).to(torch.float16).cpu()
                        if not torch.isfinite(features).all():
                            raise FloatingPointError(f"non-finite features ({dev_name}, {amp})")
                        n += len(coords)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                rates[path] = n / (time.perf_counter() - started)
            peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
            print(
                f"[extraction] {label} k={k} on {dev_name}: numpy path {rates['cpu']:.0f} blocks/s, "
                f"tensor path {rates['device']:.0f} blocks/s: ratio {rates['device'] / rates['cpu']:.2f}"
                f" (autocast {amp})"
            )
            if summary:
                row = {"recipe": f"gcn_mil extraction {label}", "device": dev.type,
                       "amp_dtype": amp, "images_per_s": rates["device"], "unit": "blocks/s",
                       "numpy_path_per_s": rates["cpu"], "peak_memory_mib": peak}  # fmt: skip
                with open(summary, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row) + "\n")
    if not torch.cuda.is_available():
        print("[extraction] no CUDA device here: the GPU figure is printed where one is present")


# --------------------------------------------------------------------------- stage memory

#: The default run's bag count (188 DR training bags + validation + test at n_runs = 2, 2 shards).
DEFAULT_BAGS = 240
#: The real run: DR training bags x views, validation + test bags, blocks per bag.
REAL_TRAIN_BAGS = 23_536 * 8
REAL_ZERO_BAGS = 2000 + 150 + 600
REAL_SHARDS = 10
REAL_BLOCKS = (200, 450, 700)


def _watch_memory(stop: threading.Event, peak: dict) -> None:
    while not stop.is_set():
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(("RssAnon:", "VmHWM:")):
                    key, value = line.split(":")
                    peak[key] = max(peak.get(key, 0), int(value.split()[0]) * 1024)
        stop.wait(0.02)


def _stage(name: str, root: str, queue) -> None:
    """Run one stage in this fresh process and report its peak anonymous and total RSS."""
    import logging

    from melrepro.papers.gcn_mil.evaluate import evaluate_gcn_mil
    from melrepro.papers.gcn_mil.features import extract_gcn_mil_features
    from melrepro.papers.gcn_mil.train import train_gcn_mil

    logging.disable(logging.INFO)
    torch.set_num_threads(1)
    root_path = Path(root)
    shards = sorted(str(p) for p in root_path.glob("features/shard-*[0-9].pt"))
    zero = [p.replace(".pt", "_zero.pt") for p in shards]
    peak: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_memory, args=(stop, peak), daemon=True)
    watcher.start()
    model = {"hidden_channels": 128, "attention_channels": 32}
    if name == "extract":
        # The memory that grows with the shard is the float16 features held until saving, not
        # the backbone: a fixed random projection of each block's mean colour stands in for the
        # ResNet18 (whose ~45 MB of weights and activations of one batch are a constant).
        projection = torch.randn(3, 512)
        mil.BlockEncoder.forward = lambda self, blocks, channels_first=False: (
            blocks.float().mean(dim=(2, 3) if channels_first else (1, 2)) @ projection
        )
        extract_gcn_mil_features(
            root_path / "cache/shard-000.npz", root_path / "manifest.parquet", root_path / "split.parquet",
            root_path / "extract/f.pt", root_path / "extract/f_zero.pt",
            bags=json.loads((root_path / "bags.json").read_text()), device="cpu",
        )  # fmt: skip
    elif name == "train":
        train_gcn_mil(
            shards, root_path / "m.pt", root_path / "h.tsv", root_path / "ck", model=model,
            train={"epochs": 1, "lr": 1e-3, "batch_size": 4}, adjacency="stride", device="cpu",
        )  # fmt: skip
    elif name == "evaluate":
        caches = sorted(str(p) for p in root_path.glob("cache/shard-*.npz"))
        out = [root_path / f"eval/{n}" for n in ("p.csv", "s.csv", "m.json", "a.npz")]
        evaluate_gcn_mil(root_path / "m.pt", zero, caches, *out, device="cpu")
    stop.set()
    watcher.join()
    queue.put(peak)


def _run_stage(name: str, root: Path) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_stage, args=(name, str(root), queue))
    proc.start()
    peak = queue.get()
    proc.join()
    return peak


def _write_bench_set(root: Path, n_bags: int, blocks: int, seed: int = 0) -> dict:
    """Cache shards, manifest, split and format-2 feature shards with ``n_bags`` bags in all.

    Images are side x side with a k = 8, stride 8 grid of ``blocks`` blocks; 80 % of the bags
    are DR training copies (4 per image), the rest validation and test images.
    """
    import pandas as pd
    import torch

    from melrepro.methods.mil import CLASSES
    from melrepro.papers.gcn_mil.features import FEATURE_FORMAT

    side = int(np.sqrt(blocks)) * 8
    rng = np.random.default_rng(seed)
    n_train = int(n_bags * 0.8) // 4
    n_other = n_bags - 4 * n_train
    rows, shards = [], [{}, {}]
    for i in range(n_train + n_other):
        split = "train" if i < n_train else ("val" if i % 4 == 0 else "test")
        image_id = f"ISIC_{i:07d}"
        rows.append({"image_id": image_id, "label": CLASSES[i % 3], "split": split,
                     "width": side, "height": side, "shard": i % 2})  # fmt: skip
        shards[i % 2][f"image__{image_id}"] = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        shards[i % 2][f"mask__{image_id}"] = (rng.random((side, side)) > 0.5).astype(np.uint8)
    (root / "cache").mkdir(parents=True, exist_ok=True)
    for k, arrays in enumerate(shards):
        np.savez(root / f"cache/shard-{k:03d}.npz", **arrays)
    frame = pd.DataFrame(rows)
    frame.drop(columns="split").to_parquet(root / "manifest.parquet")
    frame[["image_id", "split"]].to_parquet(root / "split.parquet")
    coords = torch.from_numpy(mil.block_grid(side, side, block_size=8, stride=8).astype(np.int32))
    key = (side, side, 8, 8)
    header = {"format": FEATURE_FORMAT, "options": {}, "weights": "random-init"}
    total = 0
    (root / "features").mkdir(exist_ok=True)
    for k in range(2):
        bags = []
        for row in rows:
            if row["shard"] != k:
                continue
            for angle in (0.0, 90.0, 180.0, 270.0) if row["split"] == "train" else (0.0,):
                features = torch.from_numpy(rng.standard_normal((len(coords), 512), np.float32))
                bags.append({**{c: row[c] for c in ("image_id", "split", "label")}, "angle": angle,
                             "view": 0, "shape": (side, side), "block_size": 8, "stride": 8,
                             "grid": key, "features": features.to(torch.float16)})  # fmt: skip
        total += sum(b["features"].nbytes for b in bags)
        torch.save(
            {**header, "grids": {key: coords}, "bags": bags}, root / f"features/shard-{k:03d}.pt"
        )
        zero = [b for b in bags if b["angle"] == 0.0]
        torch.save(
            {**header, "grids": {key: coords}, "bags": zero},
            root / f"features/shard-{k:03d}_zero.pt",
        )
    bags_json = {"block_size": 8, "strides": [8, 8, 8], "rotation_steps": {c: 90 for c in CLASSES},
                 "dihedral_views": 1, "batch_size": 256}  # fmt: skip
    (root / "bags.json").write_text(json.dumps(bags_json))
    n_zero = sum(1 for r in rows if r["split"] != "train") + n_train
    return {"feature_bytes": total, "zero_bytes": total * n_zero / n_bags,
            "shard0_bytes": total / 2, "n_bags": n_bags}  # fmt: skip


def _fit(xs, ys) -> tuple[float, float]:
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(intercept), float(slope)


def bench_stage_memory(multiples=(1, 4, 16), blocks: int = 400) -> None:
    """Peak RSS of the three heavy stages at several bag counts, fitted and extrapolated."""
    gib = 1024**3
    results = {stage: [] for stage in ("extract", "train", "evaluate")}
    for multiple in multiples:
        with tempfile.TemporaryDirectory(prefix="bench_mil_") as tmp:
            root = Path(tmp)
            sizes = _write_bench_set(root, DEFAULT_BAGS * multiple, blocks)
            for stage in results:
                started = time.perf_counter()
                peak = _run_stage(stage, root)
                results[stage].append((sizes, peak))
                print(
                    f"[stage memory] {multiple:2d}x ({sizes['n_bags']} bags of {blocks} blocks, "
                    f"{sizes['feature_bytes'] / gib:.2f} GiB features) {stage:8s}: peak RSS "
                    f"{peak['VmHWM'] / gib:.2f} GiB, anonymous {peak['RssAnon'] / gib:.2f} GiB "
                    f"({time.perf_counter() - started:.0f} s)"
                )
    # Which feature bytes each stage holds: extraction its shard's (all of them, until saved),
    # training all shards (memory-mapped: file pages, the anonymous part stays small),
    # evaluation the 0-degree files only.
    x_of = {"extract": "shard0_bytes", "train": "feature_bytes", "evaluate": "zero_bytes"}
    for blocks_real in REAL_BLOCKS:
        bag_bytes = blocks_real * 512 * 2
        real = {
            "extract": (REAL_TRAIN_BAGS + REAL_ZERO_BAGS) / REAL_SHARDS * bag_bytes,
            "train": (REAL_TRAIN_BAGS + REAL_ZERO_BAGS) * bag_bytes,
            "evaluate": REAL_ZERO_BAGS * bag_bytes,
        }
        parts = []
        for stage, rows in results.items():
            xs = [s[x_of[stage]] for s, _ in rows]
            a_rss, b_rss = _fit(xs, [p["VmHWM"] for _, p in rows])
            a_anon, b_anon = _fit(xs, [p["RssAnon"] for _, p in rows])
            parts.append(
                f"{stage} RSS {(a_rss + b_rss * real[stage]) / gib:.1f} GiB "
                f"(anonymous {(a_anon + b_anon * real[stage]) / gib:.1f}; "
                f"{b_rss:.2f}/{b_anon:.2f} bytes per feature byte)"
            )
        print(
            f"[stage memory] real run at {blocks_real} blocks/bag: features on disk "
            f"{real['train'] / 1e9:.0f} GB (+{REAL_ZERO_BAGS * bag_bytes / 1e9:.1f} GB 0-degree "
            f"files); " + "; ".join(parts)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per speed measurement")
    parser.add_argument("--images", type=int, default=4, help="images per extraction measurement")
    parser.add_argument("--memory", action="store_true", help="only the stage-memory benchmark")
    parser.add_argument("--extraction", action="store_true", help="only the extraction speed")
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], help="extraction on this device only (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="extraction: default geometry only")
    parser.add_argument("--summary", help="extraction: append one JSON line per geometry here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory:
        bench_stage_memory()
        return
    if args.extraction:
        bench_extraction(
            args.images, args.device, geometries=1 if args.quick else 2, summary=args.summary
        )
        return
    bench_memory()
    bench_backbone(args.seconds)
    bench_adjacency()
    bench_gcn_layer(args.seconds)
    bench_extraction(args.images)
    report_default_run()


if __name__ == "__main__":
    main()
