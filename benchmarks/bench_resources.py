"""Every rule whose memory or time grows with the data: measured at three sizes, fitted,
extrapolated to the real counts and compared with what the rule declares (issue 19).

Run: ``.venv/bin/python benchmarks/bench_resources.py [--quick] [--write-doc]``

* The declarations (``mem_mb``, ``runtime`` per job) and the job counts come from
  ``snakemake -n --configfile config/isic.yaml`` in a scratch copy of the workflow, whose
  Snakefile also dumps the resolved config: the same resolution Snakemake does (files merged,
  schema defaults filled). The per-image settings (resolutions, batch sizes, views, epochs) are
  read from that resolved config.
* Every measurement runs in a fresh process (``--probe``), which reports its own peak RSS
  (``ru_maxrss``) and time; each rule is measured at three sizes and fitted linearly
  (``need = a + b x``), ``x`` being what grows (images held, megapixels, batch size).
* What is too slow for this CPU at the real size is measured at the real per-image settings on
  few images: a training step at the real image size and batch 1-3, extrapolated linearly to the
  real batch (its activations grow with the batch) plus the images the job holds. GPU time is not
  measurable here: it is the step's counted FLOPs over an assumed sustained throughput
  (:data:`GPU_TFLOPS`), said in the row.
* A row FAILs when the extrapolated need exceeds the declaration; the script then exits 1.
  ``--quick`` measures at toy sizes (seconds; the figures are not meaningful, the table is).
  ``--write-doc`` writes docs/real_run.md from the same numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MB = 1e6

#: Images per dataset in the real archives (the issue's counts; ISIC 2020 = 33,126 + 10,982 test).
REAL_IMAGES = {
    "isic2017": 2750,
    "isic2018_task2": 2594,
    "isic2018_task3": 11720,
    "isic2019": 25331,
    "isic2020": 44108,
}
#: The largest official images (src/melrepro/data/archive_io.py): every check decodes one at most.
LARGEST_PIXELS = 6000 * 4000
#: ASSUMPTION (replace by the manifests' width x height once the archives are ingested): mean
#: megapixels of an ISIC 2017 image. The training zip holds 2,000 JPEGs in ~5.8 GB (2.9 MB each):
#: most are 1022x767, a third are camera originals of 12-30 MP; 6.5 MP on average.
ASSUMED_MEAN_MP = {"isic2017": 6.5}
#: ASSUMPTION: sustained training throughput of one workstation GPU (RTX 3090 / A5000 class),
#: TFLOP/s, with and without mixed precision (about a third of the peak).
GPU_TFLOPS = {True: 25.0, False: 10.0}
#: ASSUMPTION: download sizes (GB) of the official archives, from the ISIC challenge pages
#: (config/archive_checksums.tsv has no sizes yet); the ISIC-archive melanomas ~1 GB.
DOWNLOAD_GB = {
    "isic2017": 13.0,
    "isic_archive_melanoma": 1.0,
    "isic2018_task2": 10.5,
    "isic2018_task3": 3.1,
    "isic2019": 9.1,
    "isic2020": 30.0,
}
#: The workstation of docs/real_run.md.
WORKSTATION = {"cores": 8, "gpus": 2}

PAPER_OF_FILE = {
    "data": "shared data",
    "download": "shared data",
    "weights": "shared data",
    "report": "report",
    "gcn_mil": "gcn_mil",
    "sp_graphs": "sp_graphs",
    "effnet_ham": "effnet_ham",
    "gradcam_overlap": "gradcam_overlap",
    "siim2020": "siim2020",
}


# ---------------------------------------------------------------------------------------------
# probes: one measurement each, in a fresh process


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def _jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """A photo-like JPEG (smooth colour field plus noise, so it compresses like one)."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (128 + 60 * np.sin(xx / 97.0)[..., None] * np.cos(yy / 71.0)[..., None]).astype(np.int16)
    noisy = base + rng.integers(-20, 20, (height, width, 3), dtype=np.int16)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _side(megapixels: float) -> tuple[int, int]:
    """Width and height of a 3:2 image of ``megapixels``."""
    height = int(math.sqrt(megapixels * 1e6 / 1.5))
    return int(height * 1.5), height


def probe_check_image(x: float, args: dict) -> dict:
    """check_images: one image of ``x`` megapixels decoded as the check does, timed."""
    from melrepro.data.manifests import _check_image

    data = _jpeg(*_side(x))
    _check_image(data)
    start = time.perf_counter()
    for _ in range(2):
        _check_image(data)
    return {"seconds_per_image": (time.perf_counter() - start) / 2}


def probe_cache_orig(x: float, args: dict) -> dict:
    """cache_images at orig: a shard of ``x`` images of ``mp`` megapixels (with masks)."""
    import io

    import pandas as pd
    from PIL import Image

    from melrepro.data.imagecache import cache_images

    width, height = _side(args["mp"])
    root = Path(args["tmp"]) / f"cache_{x}"
    root.mkdir(parents=True)
    data = _jpeg(width, height)
    mask = io.BytesIO()
    Image.fromarray(
        (np.arange(width)[None, :] > width // 2).repeat(height, 0).astype(np.uint8) * 255
    ).save(mask, "PNG")
    rows = []
    for i in range(int(x)):
        (root / f"im{i}.jpg").write_bytes(data)
        (root / f"im{i}.png").write_bytes(mask.getvalue())
        rows.append({"image_id": f"im{i}", "image_uri": f"im{i}.jpg", "mask_uri": f"im{i}.png",
                     "width": width, "height": height, "shard": 0})  # fmt: skip
    start = time.perf_counter()
    cache_images(pd.DataFrame(rows), root, 0, "orig", root / "shard.npz")
    return {"seconds": time.perf_counter() - start}


def probe_hold_images(x: float, args: dict) -> dict:
    """The images a training job holds: ``x`` cached images at ``size`` read and wrapped as the
    recipe does (gradcam_overlap: read_cache_subset + build_datasets with its augment)."""
    import pandas as pd

    from melrepro.papers.gradcam_overlap.datasets import build_datasets, read_cache_subset

    height, width = args["shape"]
    rng = np.random.default_rng(0)
    path = Path(args["tmp"]) / f"hold_{x}.npz"
    n = int(x)
    ids = [f"im{i}" for i in range(n)]
    np.savez(
        path, **{f"image__{i}": rng.integers(0, 256, (height, width, 3), np.uint8) for i in ids}
    )
    frame = pd.DataFrame({"image_id": ids, "y": np.arange(n) % 8, "split": "train"})
    start = time.perf_counter()
    images = read_cache_subset([path], set(ids))
    data = build_datasets(frame, images, args.get("augment", "none"), splits=("train",))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "items": len(data["train"])}


def _options(args: dict):
    from melrepro.methods import training

    settings = {
        k: v for k, v in args["train"].items() if k in training.TrainOptions.__dataclass_fields__
    }
    settings.update(pretrained=False, device="cpu", threads=args.get("threads", 2),
                    sampler_positive_fraction=None, amp=False)  # fmt: skip
    return training.TrainOptions.from_dict(settings)


_MODELS: dict = {}


def _model(options):
    """``build_model(options)``; --quick (one process) builds each model once."""
    from melrepro.methods import training

    if not IN_PROCESS:
        return training.build_model(options)
    key = (options.backbone, options.image_size, options.head, options.n_classes)
    if key not in _MODELS:
        _MODELS[key] = training.build_model(options)
    return _MODELS[key]


def probe_train_step(x: float, args: dict) -> dict:
    """A training step at the real image size and optimizer, batch ``x`` (on CPU)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from melrepro.methods import training
    from melrepro.methods.training.optim import _make_optimizer

    torch.set_num_threads(args.get("threads", 2))
    options = _options(args)
    model = _model(options).train()
    optimizer = _make_optimizer(model, options)
    loss_fn = training.make_loss(options)
    batch = int(x)
    size = int(options.image_size)
    images = torch.rand(batch, 3, size, size)
    labels = torch.arange(batch) % max(options.n_classes, 2)
    if options.n_classes == 1:
        labels = (labels % 2).float()

    def logits() -> torch.Tensor:
        z = model(images)
        return z.squeeze(-1) if z.shape[-1] == 1 else z  # as the training loop does

    def step() -> None:
        optimizer.zero_grad()
        loss_fn(logits(), labels).backward()
        optimizer.step()

    step()  # optimizer state and allocator warm-up
    start = time.perf_counter()
    step()
    out = {"seconds_per_image": (time.perf_counter() - start) / batch}
    if args.get("flops"):
        with FlopCounterMode(display=False) as counter:
            optimizer.zero_grad()
            loss_fn(logits(), labels).backward()
        out["train_flops_per_image"] = counter.get_total_flops() / batch
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(images)
        out["eval_flops_per_image"] = counter.get_total_flops() / batch
        out["parameters"] = sum(p.numel() for p in model.parameters())
    return out


def probe_gradcam(x: float, args: dict) -> dict:
    """compute_gradcam_overlap: Grad-CAM of ``x`` images at the model's size and layer."""
    import torch

    from melrepro.methods import saliency
    from melrepro.methods.training.models import keras_layer

    torch.set_num_threads(args.get("threads", 2))
    model = _model(_options(args)).eval()
    size = int(args["train"]["image_size"])
    images = torch.rand(int(x), 3, size, size)
    layer = keras_layer(model, args["layer"])
    saliency.gradcam_layer_maps(model, images[:1], layer, batch_size=args["batch"])
    start = time.perf_counter()
    saliency.gradcam_layer_maps(model, images, layer, batch_size=args["batch"])
    return {"seconds_per_image": (time.perf_counter() - start) / int(x)}


def probe_sp_graphs(x: float, args: dict) -> dict:
    """extract_sp_graphs_features: ``x`` images at the working resolution, one after another."""
    from melrepro.papers.sp_graphs.features import image_features

    width, height = args["shape"]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    start = time.perf_counter()
    blob = ((yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (height / 3) ** 2)[..., None]
    for _ in range(int(x)):
        image = (rng.integers(150, 200, (height, width, 3)) - 90 * blob).astype(np.uint8)
        image_features(image)
    return {"seconds_per_image": (time.perf_counter() - start) / int(x)}


def probe_count_cells(x: float, args: dict) -> dict:
    """count_cells: the cell counts of ``x`` task-2 masks (6 channels) at ``mp`` megapixels."""
    from melrepro.data.cellcounts import mask_cell_counts

    width, height = _side(args["mp"])
    mask = np.random.default_rng(0).random((height, width)) > 0.5
    start = time.perf_counter()
    for _ in range(int(x) * 6):
        mask_cell_counts(mask, tuple(args["grid"]))
    return {"seconds_per_image": (time.perf_counter() - start) / int(x)}


def probe_gcn_mil(x: float, args: dict) -> dict:
    """extract, train and evaluate_gcn_mil on ``x`` times the default bag count
    (benchmarks/bench_mil.py's bench set), each stage in its own process, one after another."""
    import multiprocessing

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_mil

    root = Path(args["tmp"]) / f"mil_{x}"
    root.mkdir(parents=True)
    sizes = bench_mil._write_bench_set(root, int(bench_mil.DEFAULT_BAGS * x), args["blocks"])
    x_of = {"extract": "shard0_bytes", "train": "feature_bytes", "evaluate": "zero_bytes"}
    out = {}
    ctx = multiprocessing.get_context("spawn")
    for stage in ("extract", "train", "evaluate"):
        queue = ctx.Queue()
        proc = ctx.Process(target=bench_mil._stage, args=(stage, str(root), queue))
        start = time.perf_counter()
        proc.start()
        try:
            peak = queue.get(timeout=1200)  # a stage that dies never answers
        finally:
            proc.join(timeout=60)
        # Training memory-maps the features: their pages are file cache, reclaimable, and fill
        # VmHWM up to the features' size; what the job itself needs is its anonymous memory.
        held = peak["RssAnon"] if stage == "train" else peak["VmHWM"]
        out[stage] = {"seconds": time.perf_counter() - start, "peak_mb": held / MB,
                      "feature_bytes": sizes[x_of[stage]]}  # fmt: skip
    return out


PROBES = {
    name.removeprefix("probe_"): fn for name, fn in globals().items() if name.startswith("probe_")
}


#: --quick runs the probes in this process (seconds instead of a torch import per probe): the
#: table is complete but the peaks are this process's, not the probe's.
IN_PROCESS = False


def run_probe(name: str, x: float, args: dict) -> dict:
    """``PROBES[name](x)`` in a fresh process: its peak RSS (MB) and what the probe returns."""
    if IN_PROCESS:
        return {**PROBES[name](x, args), "peak_mb": _peak_mb()}
    command = [sys.executable, __file__, "--probe", name, "--x", str(x), "--args", json.dumps(args)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"probe {name} x={x} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# declarations and the resolved config: snakemake -n on the real config


def dry_run(scratch: Path) -> tuple[dict, dict, dict, float, set]:
    """``(config, declared, jobs, seconds, caches)`` of ``snakemake -n --configfile
    config/isic.yaml``: the resolved config, ``{rule: {"mem_mb": max, "runtime": max}}``,
    ``{rule: job count}``, its wall time and the ``(dataset, res)`` image caches it builds."""
    scratch.mkdir(parents=True)
    for name in ("workflow", "scripts", "envs", "profiles", "src", "docs"):
        (scratch / name).symlink_to(ROOT / name)
    shutil.copytree(ROOT / "config", scratch / "config")
    dump = scratch / "resolved_config.json"
    snakefile = (ROOT / "Snakefile").read_text()
    snakefile += f"\nimport json\n\nwith open({str(dump)!r}, 'w') as f:\n    json.dump(config, f)\n"
    (scratch / "Snakefile").write_text(snakefile)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", "config/isic.yaml", "--cores", "8"],
        cwd=scratch, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake -n failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    declared: dict = defaultdict(lambda: {"mem_mb": 0, "runtime": 0})
    jobs: dict = defaultdict(int)
    caches: set = set()
    rule = None
    for line in proc.stdout.splitlines():
        if match := re.match(r"^rule (\w+):", line) or re.match(r"^localrule (\w+):", line):
            rule = match.group(1)
            jobs[rule] += 1
        elif rule and line.strip().startswith("resources:"):
            for key in ("mem_mb", "runtime"):
                if found := re.search(rf"\b{key}=(\d+)", line):
                    declared[rule][key] = max(declared[rule][key], int(found.group(1)))
        elif rule == "cache_images" and (found := re.search(r"dataset=(\w+), res=(\w+)", line)):
            caches.add(found.groups())
    return json.loads(dump.read_text()), dict(declared), dict(jobs), seconds, caches


def rule_papers() -> dict[str, str]:
    """Rule name -> paper (or shared data / report), from the rule file it is in."""
    out = {}
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for name in re.findall(r"^\s*(?:local)?rule (\w+):", path.read_text(), flags=re.M):
            out[name] = PAPER_OF_FILE.get(path.stem, path.stem)
    return out


# ---------------------------------------------------------------------------------------------
# fits and rows


def fit(xs, ys) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``y = a + b x``."""
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(intercept), float(slope)


@dataclass
class Row:
    """One rule's declared and extrapolated needs (MB, minutes)."""

    rule: str
    declared_mem_mb: float
    declared_runtime: float
    need_mem_mb: float
    need_runtime: float
    how: str
    gpu: bool = False
    disk_gb: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        out = []
        if self.need_mem_mb > self.declared_mem_mb:
            out.append("mem_mb")
        if self.need_runtime > self.declared_runtime:
            out.append("runtime")
        return out


def measure(name: str, sizes, args: dict, value, log) -> list[tuple[float, float, dict]]:
    """``(x, peak_mb, result)`` of probe ``name`` at each size; ``value`` of a result is fitted."""
    out = []
    for x in sizes:
        result = run_probe(name, x, args)
        out.append((x, result["peak_mb"], result))
        log(f"  {name:12s} x={x:<8g} peak {result['peak_mb']:8.0f} MB  {value(result):.4g}")
    return out


def _mem_fit(points, key="peak_mb"):
    return fit([p[0] for p in points], [p[2][key] if key != "peak_mb" else p[1] for p in points])


def build_rows(config: dict, declared: dict, quick: bool, tmp: Path, log) -> list[Row]:
    """Measure every covered rule and extrapolate it (see the module docstring)."""
    rows: list[Row] = []
    shards = config["data"]["n_shards"]
    q = quick

    def decl(rule: str) -> tuple[float, float]:
        d = declared.get(rule, {"mem_mb": 0, "runtime": 0})
        return d["mem_mb"], d["runtime"]

    # -- check_images: one image decoded at a time; the largest decides memory
    pts = measure("check_image", (0.05, 0.1, 0.2) if q else (1.0, 3.0, 6.0), {},
                  lambda r: r["seconds_per_image"], log)  # fmt: skip
    a, b = fit([p[0] for p in pts], [p[1] for p in pts])
    ta, tb = fit([p[0] for p in pts], [p[2]["seconds_per_image"] for p in pts])
    largest = LARGEST_PIXELS / 1e6
    per_shard = max(
        REAL_IMAGES["isic2020"] / shards["isic2020"], REAL_IMAGES["isic2017"] / shards["isic2017"]
    )
    need_min = per_shard * (ta + tb * largest) / 60
    rows.append(Row("check_images", *decl("check_images"), a + b * largest, need_min,
                    f"x = MP of the image decoded; at {largest:.0f} MP, {per_shard:.0f} images/shard "
                    f"all at the largest size ({(ta + tb * largest) * 1e3:.0f} ms each)"))  # fmt: skip

    # -- cache_images at orig (gcn_mil): the whole shard is held until the npz is written
    mp = 0.05 if q else 0.5
    pts = measure("cache_orig", (2, 4, 6) if q else (4, 8, 16), {"mp": mp, "tmp": str(tmp)},
                  lambda r: r["seconds"], log)  # fmt: skip
    xs = [p[0] * mp for p in pts]
    a, b = fit(xs, [p[1] for p in pts])
    ta, tb = fit(xs, [p[2]["seconds"] for p in pts])
    n_shard = math.ceil(REAL_IMAGES["isic2017"] / shards["isic2017"])
    held = n_shard * ASSUMED_MEAN_MP["isic2017"]
    rows.append(Row("cache_images", *decl("cache_images"), a + b * held, (ta + tb * held) / 60,
                    f"orig, isic2017: {n_shard} images/shard x {ASSUMED_MEAN_MP['isic2017']} MP "
                    f"(assumed mean) = {held:.0f} MP held; {b:.1f} MB per MP (image + mask)"))  # fmt: skip

    # -- trainings: images held + one step at the real image size and batch
    trainings = _trainings(config)
    for rule, spec in trainings.items():
        log(f"[{rule}]")
        hold = measure("hold_images", (4, 8, 12) if q else (64, 128, 256),
                       {"shape": spec["cache_shape"], "tmp": str(tmp), "augment": spec["augment"]},
                       lambda r: r["items"], log)  # fmt: skip
        _, per_image = fit([p[0] for p in hold], [p[1] for p in hold])
        per_image = max(per_image, 0.0)
        step_args = {"train": spec["train"], "flops": True, "threads": 2}
        if q:
            step_args["train"] = {**spec["train"], "image_size": 32, "head_hidden": 8}
        batches = (2, 3, 4)
        steps = []
        for x in batches:
            result = run_probe("train_step", x, {**step_args, "flops": x == batches[0]})
            steps.append((x, result["peak_mb"], result))
            log(f"  train_step   batch={x} peak {result['peak_mb']:8.0f} MB  "
                f"{result['seconds_per_image']:.3g} s/image (CPU)")  # fmt: skip
        a, b = fit(batches, [p[1] for p in steps])
        batch = int(spec["train"]["batch_size"])
        step_mb = a + b * batch
        need_mem = step_mb + per_image * spec["held"]
        flops = steps[0][2]
        amp = bool(spec["train"].get("amp", False))
        total_flops = (
            spec["epochs"]
            * (
                spec["train_items"] * flops["train_flops_per_image"]
                + spec["val_items"] * flops["eval_flops_per_image"]
            )
            + spec["predict_items"] * flops["eval_flops_per_image"]
        )
        gpu_min = total_flops / (GPU_TFLOPS[amp] * 1e12) / 60
        cpu_s = float(np.mean([p[2]["seconds_per_image"] for p in steps]))
        params = flops["parameters"]
        # checkpoints: best + last (weights, gradients-free optimizer state) + the published model
        ckpt_gb = params * 4 * (3 + spec["optimizer_states"]) / 1e9
        rows.append(Row(rule, *decl(spec["job"]), need_mem, gpu_min,
                        f"step at {spec['train']['image_size']} px, batch 2-4 -> {batch} "
                        f"({step_mb:.0f} MB) + {spec['held']} images held x {per_image:.2f} MB; "
                        f"GPU time = {total_flops / 1e15:.0f} PFLOP / {GPU_TFLOPS[amp]:.0f} TFLOP/s "
                        f"(assumed; CPU would be {cpu_s * spec['train_items'] * spec['epochs'] / 3600:.0f} h)",
                        gpu=True, disk_gb=ckpt_gb, extra={"job": spec["job"]}))  # fmt: skip

    # -- gradcam_overlap Grad-CAM (compute_gradcam_overlap): per task-2 shard, batch of 16
    go = config["gradcam_overlap"]
    n_t2 = math.ceil(REAL_IMAGES["isic2018_task2"] / shards["isic2018_task2"])
    worst_mem, worst_min = 0.0, 0.0
    for key, model in go["models"].items():
        train = {
            **go["train"],
            **{k: v for k, v in model.items() if k != "label"},
            "n_classes": 8,
            "loss": "ce",
        }
        if q:
            train.update(image_size=32, head_hidden=8)
        args = {"train": train, "layer": model["layer"], "batch": int(go["gradcam_batch_size"])}
        log(f"[compute_gradcam_overlap {key}]")
        pts = measure("gradcam", (1, 2, 3), args, lambda r: r["seconds_per_image"], log)
        a, b = fit([p[0] for p in pts], [p[1] for p in pts])
        mem = a + b * min(int(go["gradcam_batch_size"]), n_t2)
        # the shard's images at the model's size (uint8) are held too
        mem += n_t2 * 3 * int(model["image_size"]) ** 2 / MB
        sec = float(np.mean([p[2]["seconds_per_image"] for p in pts]))
        worst_mem, worst_min = max(worst_mem, mem), max(worst_min, n_t2 * sec / 60)
    rows.append(Row("compute_gradcam_overlap", *decl("compute_gradcam_overlap"), worst_mem,
                    worst_min, f"batch 1-3 -> {go['gradcam_batch_size']} at the model's size, "
                    f"{n_t2} images/shard; runtime on CPU (the rule's own device may be a GPU)"))  # fmt: skip

    # -- count_cells: per task-2 shard, the 6 masks of each image at full resolution
    mp = 0.05 if q else 2.0
    pts = measure("count_cells", (1, 2, 3), {"mp": mp, "grid": [28, 28]},
                  lambda r: r["seconds_per_image"], log)  # fmt: skip
    a, b = fit([p[0] for p in pts], [p[1] for p in pts])
    per_mp = float(np.mean([p[2]["seconds_per_image"] for p in pts])) / mp
    rows.append(Row("count_cells", *decl("count_cells"), a + (pts[-1][1] - pts[0][1]) / mp * largest,
                    n_t2 * per_mp * largest / 60,
                    f"{n_t2} images/shard x 6 masks, all at {largest:.0f} MP (the largest)"))  # fmt: skip

    # -- sp_graphs features: per isic2017 shard at the working resolution
    width = 1024 if not q else 48
    pts = measure("sp_graphs", (1, 2, 3), {"shape": [width, width * 3 // 4]},
                  lambda r: r["seconds_per_image"], log)  # fmt: skip
    a, b = fit([p[0] for p in pts], [p[1] for p in pts])
    sec = float(np.mean([p[2]["seconds_per_image"] for p in pts]))
    n17 = math.ceil(REAL_IMAGES["isic2017"] / shards["isic2017"])
    rows.append(Row("extract_sp_graphs_features", *decl("extract_sp_graphs_features"),
                    max(p[1] for p in pts) + max(b, 0) * 0, n17 * sec / 60,
                    f"{config['sp_graphs']['working_resolution']}: {n17} images/shard one after "
                    f"another ({sec:.1f} s each, memory does not grow with the count: "
                    f"{b:+.0f} MB/image)"))  # fmt: skip

    # -- gcn_mil extract / train / evaluate: bench_mil's bench set at 3 bag counts
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_mil

    blocks_real = 450
    bag_bytes = blocks_real * 512 * 2
    real = {
        "extract": (bench_mil.REAL_TRAIN_BAGS + bench_mil.REAL_ZERO_BAGS)
        / bench_mil.REAL_SHARDS
        * bag_bytes,
        "train": (bench_mil.REAL_TRAIN_BAGS + bench_mil.REAL_ZERO_BAGS) * bag_bytes,
        "evaluate": bench_mil.REAL_ZERO_BAGS * bag_bytes,
    }
    log("[gcn_mil extract / train / evaluate]")
    args = {"blocks": 4 if q else 100, "tmp": str(tmp)}
    pts = measure("gcn_mil", (0.05, 0.1, 0.15) if q else (0.5, 1, 2), args,
                  lambda r: r["train"]["peak_mb"], log)  # fmt: skip
    for stage in ("extract", "train", "evaluate"):
        xs = [p[2][stage]["feature_bytes"] for p in pts]
        a, b = fit(xs, [p[2][stage]["peak_mb"] for p in pts])
        rule = f"{stage}_gcn_mil_features" if stage == "extract" else f"{stage}_gcn_mil"
        rows.append(Row(rule, *decl(rule), a + b * real[stage], 0.0,
                        f"{b * MB:.2f} bytes per feature byte x {real[stage] / 1e9:.0f} GB of features "
                        f"({blocks_real} blocks/bag); runtime not extrapolated (GPU)",
                        extra={"features_gb": real["train"] / 1e9} if stage == "extract" else {}))  # fmt: skip
    return rows


def _trainings(config: dict) -> dict[str, dict]:
    """Per training rule: its settings and the real counts it sees (one row per rule, the
    heaviest of its jobs)."""
    go, eh, sm = config["gradcam_overlap"], config["effnet_ham"], config["siim2020"]
    out = {}
    n19 = REAL_IMAGES["isic2019"]
    n_train19, n_val19 = int(n19 * 0.8), n19 // 10
    for key, model in go["models"].items():
        train = {
            **go["train"],
            **{k: v for k, v in model.items() if k != "label"},
            "n_classes": 8,
            "loss": "ce",
        }
        views = 8 if go["train"].get("augment") == "dihedral8" else 1
        size = int(model["image_size"])
        out[f"train_gradcam_overlap[{key}]"] = {
            "job": "train_gradcam_overlap", "train": train, "cache_shape": [size, size],
            "augment": go["train"].get("augment", "none"),
            "held": n_train19 + n_val19, "train_items": n_train19 * views,
            "val_items": n_val19 * views, "predict_items": 2 * n_val19,
            "epochs": int(go["train"]["epochs"]), "optimizer_states": 1,
        }  # fmt: skip
    recipe = dict(eh["recipe"])
    size = max(
        int(recipe["image_size"]),
        *(int(v["overrides"].get("image_size", 0)) for v in eh["variants"].values()),
    )
    n3 = REAL_IMAGES["isic2018_task3"]
    out["train_effnet_ham"] = {
        "job": "train_effnet_ham", "train": {**recipe, "image_size": size, "n_classes": 1},
        "cache_shape": [224, 299], "augment": "none", "held": n3,
        "train_items": int(n3 * 0.7), "val_items": int(n3 * 0.15), "predict_items": int(n3 * 0.3),
        "epochs": int(recipe["epochs"]), "optimizer_states": 2,
    }  # fmt: skip
    n20 = REAL_IMAGES["isic2020"]
    side = int(re.sub(r"\D", "", sm["cache_res"]))
    out["train_siim2020"] = {
        "job": "train_siim2020", "train": {**sm["train"], "image_size": side, "n_classes": 1},
        "cache_shape": [side, side], "augment": "none",
        # All: every training image plus val/eval and the 10,982 test images (config comment)
        "held": n20, "train_items": int(33126 * 0.85), "val_items": int(33126 * 0.15),
        "predict_items": 10982, "epochs": int(sm["train"]["epochs"]), "optimizer_states": 2,
    }  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# output


def table(rows: list[Row]) -> str:
    head = f"{'rule':40s} {'mem_mb decl':>11s} {'need':>8s} {'runtime decl':>12s} {'need':>8s}  status  how"
    lines = [head, "-" * len(head)]
    for row in rows:
        status = "FAIL " + "+".join(row.failures) if row.failures else "ok"
        lines.append(
            f"{row.rule:40s} {row.declared_mem_mb:11.0f} {row.need_mem_mb:8.0f} "
            f"{row.declared_runtime:12.0f} {row.need_runtime:8.1f}  {status:7s} {row.how}"
        )
    return "\n".join(lines)


#: The datasets each paper reads (its download).
#: (workflow/rules/common.smk PAPER_DATASETS; gradcam_overlap reads only ISIC 2017's metadata)
DATASETS_OF_PAPER = {
    "gcn_mil": ["isic2017"],
    "sp_graphs": ["isic2017", "isic_archive_melanoma"],
    "effnet_ham": ["isic2018_task3"],
    "gradcam_overlap": ["isic2019", "isic2018_task2"],
    "siim2020": ["isic2020"],
}


#: Bytes per cached pixel triple at a resolution: sqN is N x N, maxN is N x 3N/4 (ISIC's 4:3).
def _cache_pixels(dataset: str, res: str) -> float:
    if res == "orig":
        return ASSUMED_MEAN_MP.get(dataset, 6.5) * 1e6
    side = int(re.sub(r"\D", "", res))
    return side * side if res.startswith("sq") else side * side * 0.75


def write_doc(
    path: Path,
    rows: list[Row],
    jobs: dict,
    declared: dict,
    dry_seconds: float,
    *,
    quick: bool,
    cache_sets: set,
) -> None:
    """docs/real_run.md: per paper jobs, CPU- and GPU-hours, peak RAM, disk, download, wall time."""
    papers = rule_papers()
    by_rule = defaultdict(list)
    for row in rows:
        by_rule[row.extra.get("job", row.rule)].append(row)
    stats = defaultdict(lambda: defaultdict(float))
    unmeasured = defaultdict(float)
    # declared hours of the rules whose time was not measured: the upper-bound part of the sums
    untimed_hours: dict[str, float] = {}
    for rule, n in jobs.items():
        # a model's further seeds (n_seeds) run the rule of its first seed: same paper, same need
        rule = rule.removesuffix("_seed")
        paper = papers.get(rule, "report")
        stats[paper]["jobs"] += n
        measured = by_rule.get(rule)
        # a measured memory without a measured time (gcn_mil's GPU rules) counts as untimed
        if not measured or not all(row.need_runtime > 0 for row in measured):
            hours = n * declared.get(rule, {}).get("runtime", 0) / 60
            unmeasured[paper] += hours
            untimed_hours[rule] = untimed_hours.get(rule, 0.0) + hours
        for row in measured or []:
            share = 1 if "job" not in row.extra else n / len(measured)
            key = "gpu_h" if row.gpu else "cpu_h"
            stats[paper][key] += (
                share * (n if "job" not in row.extra else 1) * row.need_runtime / 60
            )
            stats[paper]["ram_gb"] = max(stats[paper]["ram_gb"], row.need_mem_mb / 1e3)
            stats[paper]["ckpt_gb"] += share * (n if "job" not in row.extra else 1) * row.disk_gb
    cache_gb = defaultdict(float)
    for dataset, res in cache_sets:
        cache_gb[dataset] += REAL_IMAGES.get(dataset, 300) * _cache_pixels(dataset, res) * 3 / 1e9
    features_gb = sum(r.extra.get("features_gb", 0.0) for r in rows)
    lines = [
        "# The real run: resources per paper",
        "",
        "Generated by `benchmarks/bench_resources.py --write-doc` (do not edit by hand; the last "
        "section, counts on the real rows, comes from `tests/test_real_rows.py` and is kept)"
        + (" -- **from a --quick run: toy sizes, the figures are not meaningful**" if quick else "")
        + ". Every rule whose memory or time grows with the data was measured at three sizes in",
        "its own process, fitted linearly and extrapolated to the real counts with config/isic.yaml's",
        "per-image settings (resolution, augmentation, batch size, views); the table at the end gives",
        "each rule's declaration against that need. Assumptions (stated in the script): GPU time is",
        f"counted FLOPs over {GPU_TFLOPS[True]:.0f} TFLOP/s (mixed precision) or {GPU_TFLOPS[False]:.0f}"
        " TFLOP/s (float32) per GPU; an ISIC 2017 image has 6.5 MP on average; download sizes",
        "are the ISIC pages' approximate figures. Rules not measured (small, constant-size jobs) count",
        "with their declared runtime, an upper bound.",
        "",
        f"`snakemake -n --configfile config/isic.yaml` (no archives present, the whole DAG from the "
        f"downloads on): **{sum(jobs.values())} jobs**, planned in {dry_seconds:.0f} s on this machine.",
        "",
        "| paper | jobs | CPU-hours (measured + declared upper bound) | GPU-hours | peak RAM (GB) "
        "| disk (GB): archives + caches + features + checkpoints | download (GB) |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    total_cpu = total_gpu = 0.0
    for paper in sorted(stats):
        st = stats[paper]
        download = sum(DOWNLOAD_GB.get(d, 0) for d in DATASETS_OF_PAPER.get(paper, []))
        cpu = st["cpu_h"] + unmeasured[paper]
        total_cpu, total_gpu = total_cpu + cpu, total_gpu + st["gpu_h"]
        paper_caches = sum(cache_gb[d] for d in DATASETS_OF_PAPER.get(paper, []))
        features = features_gb if paper == "gcn_mil" else 0.0
        disk = download + paper_caches + features + st["ckpt_gb"]
        lines.append(
            f"| {paper} | {st['jobs']:.0f} | {st['cpu_h']:.1f} + {unmeasured[paper]:.0f} | "
            f"{st['gpu_h']:.1f} | {st['ram_gb']:.1f} | {disk:.0f} = {download:.1f} + "
            f"{paper_caches:.1f} + {features:.0f} + {st['ckpt_gb']:.1f} | {download:.1f} |"
        )
    archives = sum(DOWNLOAD_GB.values())
    caches = sum(cache_gb.values())
    wall = max(total_gpu / WORKSTATION["gpus"], total_cpu / WORKSTATION["cores"])
    measured_cpu = sum(st["cpu_h"] for st in stats.values())
    wall_low = max(total_gpu / WORKSTATION["gpus"], measured_cpu / WORKSTATION["cores"])
    largest_untimed = sorted(untimed_hours.items(), key=lambda item: -item[1])[:6]
    lines += [
        "",
        "Papers share datasets (ISIC 2017 for gcn_mil and sp_graphs): the download column counts a",
        "dataset once per paper that reads it; the whole run downloads each once.",
        "",
        "## Disk",
        "",
        f"* archives (kept, zipped): {archives:.0f} GB (download {archives:.0f} GB)",
        "* image caches (uncompressed npz, every resolution the DAG asks for): "
        + ", ".join(f"{d} {gb:.1f} GB" for d, gb in sorted(cache_gb.items()))
        + f"; {caches:.0f} GB in all",
        f"* gcn_mil block features: {features_gb:.0f} GB (float16, 450 blocks per bag)",
        f"* checkpoints: {sum(st['ckpt_gb'] for st in stats.values()):.0f} GB",
        "",
        "## Wall time on one 8-core workstation with 2 GPUs",
        "",
        f"Between {wall_low:.0f} h and {wall:.0f} h with perfect packing: the larger of GPU-hours / 2 "
        f"({total_gpu / 2:.0f} h) and CPU-hours / 8, counting the measured jobs only "
        f"({measured_cpu / 8:.0f} h) or adding every untimed rule at its declared runtime "
        f"({total_cpu / 8:.0f} h). The declared runtime is a limit for the scheduler, not a "
        "measurement, so the truth lies near the lower end where those jobs are short (check_images,",
        "measured at 0.5 min against 60 declared, is typical). The largest untimed rules (declared "
        "hours): " + ", ".join(f"{rule} {hours:.0f} h" for rule, hours in largest_untimed) + ".",
        "gcn_mil's feature extraction and training run on the GPU and their time is not measured "
        "here (their memory is): they count among the untimed rules, so gcn_mil's GPU-hours read 0.",
        "",
        "## Every measured rule",
        "",
        "| rule | mem_mb declared | need | runtime declared (min) | need | status | how |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        status = "FAIL " + "+".join(row.failures) if row.failures else "ok"
        lines.append(
            f"| {row.rule} | {row.declared_mem_mb:.0f} | {row.need_mem_mb:.0f} | "
            f"{row.declared_runtime:.0f} | {row.need_runtime:.1f} | {status} | {row.how} |"
        )
    # Sections written by other commands (the counts on the real rows) are kept as they are.
    kept = path.read_text(encoding="utf-8").partition(KEPT_SECTION)[2] if path.exists() else ""
    if kept:
        lines += ["", KEPT_SECTION + kept.rstrip("\n")]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


#: The first section of docs/real_run.md that --write-doc keeps (written by another command).
KEPT_SECTION = "## Counts on the real rows"


def load_rows(path: Path, declared: dict) -> list[Row]:
    """The rows of a ``--save`` file with today's declarations (a declaration fixed after a
    measurement is checked without measuring again)."""
    rows = [Row(**item) for item in json.loads(path.read_text())]
    for row in rows:
        now = declared.get(row.extra.get("job", row.rule), {"mem_mb": 0, "runtime": 0})
        row.declared_mem_mb, row.declared_runtime = now["mem_mb"], now["runtime"]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes (a test of the script)")
    parser.add_argument("--write-doc", action="store_true", help="write docs/real_run.md")
    parser.add_argument("--declare", help="JSON {rule: {mem_mb, runtime}} overriding declarations "
                        "(to check the FAIL logic)")  # fmt: skip
    parser.add_argument("--save", type=Path, help="write the measured rows (JSON) here")
    parser.add_argument("--load", type=Path, help="take the measured rows from a --save file "
                        "instead of measuring; the declarations come from a fresh dry run")  # fmt: skip
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--x", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--args", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        result = PROBES[args.probe](args.x, json.loads(args.args))
        print(json.dumps({**result, "peak_mb": _peak_mb()}))
        return 0

    def log(message: str) -> None:
        print(message, flush=True)

    global IN_PROCESS
    IN_PROCESS = args.quick
    with tempfile.TemporaryDirectory(prefix="bench_resources_") as tmp:
        config, declared, jobs, dry_seconds, caches = dry_run(Path(tmp) / "workflow")
        log(
            f"snakemake -n --configfile config/isic.yaml: {sum(jobs.values())} jobs in {dry_seconds:.0f} s"
        )
        if args.declare:
            for rule, values in json.loads(args.declare).items():
                declared[rule] = {**declared.get(rule, {}), **values}
        if args.load:
            rows = load_rows(args.load, declared)
        else:
            rows = build_rows(config, declared, args.quick, Path(tmp) / "probes", log)
        if args.save:
            args.save.write_text(json.dumps([asdict(row) for row in rows], indent=1))
    print()
    print(table(rows))
    if args.write_doc:
        write_doc(ROOT / "docs" / "real_run.md", rows, jobs, declared, dry_seconds,
                  quick=args.quick, cache_sets=caches)  # fmt: skip
    failed = [row.rule for row in rows if row.failures]
    if failed:
        print(f"\nFAIL: {len(failed)} rules need more than they declare: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
