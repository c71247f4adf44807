"""``run_info.json``: what produced an output folder (data, config, code, packages, weights, device, seed)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "code_version", "config_hash", "run_info", "write_run_info"]

logger = logging.getLogger(__name__)

#: The packages whose versions every run_info.json records.
PACKAGES = (
    "melrepro",
    "snakemake",
    "torch",
    "torchvision",
    "torch-geometric",
    "grad-cam",
    "numpy",
    "scipy",
    "pandas",
    "scikit-image",
    "scikit-learn",
    "networkx",
    "matplotlib",
    "pillow",
)


def config_hash(config: Any) -> str:
    """SHA-256 (first 16 hex digits) of the config, serialised with sorted keys."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def code_version() -> str:
    """``git describe`` of the checkout this package runs from (with ``-dirty``), else the version."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return metadata.version("melrepro")


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _gpu_claim() -> dict[str, Any] | None:
    """Index, name and memory of the job's GPUs, as ``claim_gpus`` left them in the environment."""
    text = os.environ.get("MELREPRO_GPU_DEVICES")
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        logger.warning("MELREPRO_GPU_DEVICES is not JSON: %r", text)
        return None


#: Config keys holding local paths: recorded relative to the project, or by name when outside it.
LOCAL_PATH_KEYS = ("archive_dir", "checksums")


def _portable(value: Any) -> Any:
    if not isinstance(value, str) or not Path(value).is_absolute():
        return value
    try:
        return Path(value).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return Path(value).name


def portable_config(config: Any) -> Any:
    """``config`` with the local paths of :data:`LOCAL_PATH_KEYS` made relative (or names).

    run_info.json is shared with results; a user's absolute archive folder is not provenance
    (the checksum lock is), and it would differ between two machines running the same thing.
    """
    if isinstance(config, dict):
        return {
            key: _portable(value) if key in LOCAL_PATH_KEYS else portable_config(value)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [portable_config(value) for value in config]
    return config


def run_info(
    *,
    data_source: str,
    config: Any = None,
    seed: int | None = None,
    weights: str | None = None,
    device: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The record written to ``run_info.json``.

    Parameters
    ----------
    data_source : {"synthetic", "isic"}
        Where the images came from.
    config : dict, optional
        The config section that drove this output (hashed, and kept verbatim).
    seed : int, optional
        Random seed.
    weights : str, optional
        Which network weights were used (``"imagenet"``, ``"random-init"``, a checkpoint path).
    device : str, optional
        ``"cpu"`` or ``"cuda:0"``...
    **extra
        Anything else worth recording (deviations from the paper in this run, sizes...).
    """
    config = portable_config(config)
    return {
        "data_source": data_source,
        "config_hash": config_hash(config),
        "config": config,
        "code_version": code_version(),
        "packages": _versions(),
        "python": platform.python_version(),
        "weights": weights,
        "device": device,
        # The GPUs this job owned (methods.gpu_slots.claim_gpus exports them); None otherwise.
        "gpu": _gpu_claim(),
        "seed": seed,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
    }


def write_run_info(directory: str | Path, **info: Any) -> Path:
    """Write ``run_info.json`` into ``directory`` (see :func:`run_info` for the fields)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "run_info.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(run_info(**info), indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    logger.info("wrote %s", path)
    return path


def write_training_run_info(
    metrics_path: str | Path, result: Any, *, data_source: str, config: Any, seed: int
) -> Path:
    """``run_info.json`` beside a training's ``metrics.json``: the weights, device, torch threads
    and resumed epoch come from ``result`` (the training core's ``TrainResult``)."""
    return write_run_info(
        Path(metrics_path).parent,
        data_source=data_source,
        config=config,
        seed=seed,
        weights=result.weights,
        device=result.device,
        torch_threads=result.torch_threads,
        resumed_from_epoch=result.resumed_from_epoch,
    )
