"""Generation speed of the synthetic twin on the default config: images per second per dataset.

Prints wall seconds and CPU seconds of this process (on a shared machine the CPU time is the
fairer number), images/s and megapixels/s (wall), and the size written.

Run: ``.venv/bin/python benchmarks/bench_synthetic.py [--seed 2024] [--datasets isic2017 ...]``
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from melrepro.data.synthetic import DEFAULT_SPEC, write_synthetic_archive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2024, help="global seed (default 2024)")
    parser.add_argument(
        "--datasets", nargs="+", default=list(DEFAULT_SPEC), help="datasets (default: all six)"
    )
    args = parser.parse_args()
    total_images = 0
    total_seconds = 0.0
    total_cpu = 0.0
    total_mpix = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            outdir = Path(tmp) / dataset
            start, cpu_start = time.perf_counter(), time.process_time()
            write_synthetic_archive(dataset, outdir, DEFAULT_SPEC[dataset], seed=args.seed)
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            with (outdir / "synthetic_truth" / "truth.csv").open() as f:
                truth = list(csv.DictReader(f))
            n = len(truth)
            mpix = sum(int(r["width"]) * int(r["height"]) for r in truth) / 1e6
            size = sum(p.stat().st_size for p in outdir.rglob("*") if p.is_file()) / 2**20
            print(
                f"{dataset:24s} images={n:4d} seconds={seconds:6.2f} cpu_s={cpu:6.2f} "
                f"images/s={n / seconds:6.1f} Mpx/s={mpix / seconds:5.2f} MiB={size:6.1f}"
            )
            total_images += n
            total_seconds += seconds
            total_cpu += cpu
            total_mpix += mpix
    print(
        f"{'all':24s} images={total_images:4d} seconds={total_seconds:6.2f} "
        f"cpu_s={total_cpu:6.2f} images/s={total_images / total_seconds:6.1f} Mpx/s={total_mpix / total_seconds:5.2f}"
    )


if __name__ == "__main__":
    main()
