"""Data-layer throughput on the default config: generation, ingest checks, cache; DAG build time.

Prints images/s for each stage and the wall time of `snakemake -n` on config/isic.yaml (real
dataset sizes, no archives present). Ratios are quoted against a reference measured in the same
process: decoding the same JPEGs with PIL alone, the floor of ingest and caching.
Run: .venv/bin/python benchmarks/bench_data.py
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml
from PIL import Image

from melrepro.data.archive_io import ArchiveFolder
from melrepro.data.imagecache import cache_images
from melrepro.data.manifests import build_manifest, check_images, index_dataset
from melrepro.data.synthetic import write_synthetic_archive

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    spec = config["data"]["synthetic"].get("isic2018_task3", {})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "isic2018_task3"
        start = time.perf_counter()
        write_synthetic_archive("isic2018_task3", root, spec, seed=1)
        generation = time.perf_counter() - start
        index = index_dataset(root, "isic2018_task3")
        n = len(index)

        start = time.perf_counter()
        with ArchiveFolder(root) as archive:
            for uri in index["image_uri"]:
                Image.open(io.BytesIO(archive.read(uri))).convert("RGB")
        decode = time.perf_counter() - start

        start = time.perf_counter()
        checks = check_images(root, "isic2018_task3", 0, n_shards=1)
        check = time.perf_counter() - start
        manifest, _, _ = build_manifest(index, checks)

        timings = {}
        for res in ("sq128", "max512"):
            start = time.perf_counter()
            cache_images(manifest, root, 0, res, Path(tmp) / f"{res}.npz")
            timings[res] = time.perf_counter() - start

    print(f"isic2018_task3 default twin: {n} images")
    print(f"generate            {n / generation:8.1f} img/s")
    print(f"PIL decode (ref)    {n / decode:8.1f} img/s")
    print(
        f"check (ingest)      {n / check:8.1f} img/s   ratio to PIL decode: {check / decode:.2f}x"
    )
    for res, seconds in timings.items():
        print(
            f"cache {res:<13} {n / seconds:8.1f} img/s   ratio to PIL decode: {seconds / decode:.2f}x"
        )

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name in (
            "Snakefile",
            "workflow",
            "scripts",
            "config",
            "envs",
            "profiles",
            "src",
            "docs",
        ):
            source = ROOT / name
            (subprocess.run(["cp", "-r", str(source), str(workdir / name)], check=True))
        start = time.perf_counter()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                "-n",
                "--quiet",
                "rules",
                "--configfile",
                "config/isic.yaml",
            ],
            cwd=workdir,
            capture_output=True,
            text=True,
            check=True,
        )
        elapsed = time.perf_counter() - start
    total = re.search(r"total\s+(\d+)", result.stdout + result.stderr)
    print(
        f"snakemake -n config/isic.yaml: {elapsed:.1f} s for {total.group(1) if total else '?'} jobs"
    )


if __name__ == "__main__":
    pd.set_option("display.width", 120)
    main()
