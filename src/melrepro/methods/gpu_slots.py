"""One GPU per job under ``snakemake --resources gpu=N``: a slot allocator with ``fcntl`` locks.

Snakemake only *counts* the ``gpu`` resource (snakemake/snakemake#281): two jobs with ``gpu=1``
running at once would both pick ``cuda:0``. :func:`claim_gpus`, called by every GPU rule script
before torch initialises CUDA, gives the job devices of its own and sets ``CUDA_VISIBLE_DEVICES``:

* The devices to share come from ``MELREPRO_GPUS`` (``"0,1"``; ``""`` or ``"none"`` for none),
  else from a ``CUDA_VISIBLE_DEVICES`` the user set outside a scheduler, else from
  ``nvidia-smi -L``; none found means a CPU machine and nothing is claimed.
* One lock file per device under ``.snakemake/gpu_slots/`` (or ``MELREPRO_GPU_LOCK_DIR``),
  held with ``fcntl.flock`` for as long as the process lives. The kernel drops the lock when
  the process dies, also after SIGKILL, so a killed job never leaves a stale slot.
* Inside a SLURM job (``SLURM_JOB_ID`` set) the scheduler has already chosen: the job keeps the
  ``CUDA_VISIBLE_DEVICES`` it was given and takes no lock.

The claimed devices (index, name, memory) are logged and exported as ``MELREPRO_GPU_DEVICES``
(JSON), which :func:`melrepro.report.runinfo.run_info` copies into every ``run_info.json``.
This module does not import torch (it must run before CUDA is initialised).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = ["GpuClaim", "available_gpus", "claim_gpus", "query_gpus"]

logger = logging.getLogger(__name__)

#: Environment variable holding the JSON description of this job's GPUs (read by run_info).
CLAIM_ENV = "MELREPRO_GPU_DEVICES"

# Claims of this process: the open lock files must live as long as the process.
_HELD: list[GpuClaim] = []


@dataclass
class GpuClaim:
    """The devices a job owns.

    Attributes
    ----------
    devices : list of dict
        ``{"index": ..., "name": ..., "memory_mb": ...}`` per device (name and memory None when
        ``nvidia-smi`` cannot tell).
    source : str
        ``"slots"`` (locked here), ``"slurm"`` (given by the scheduler) or ``"none"``.
    visible : str or None
        The ``CUDA_VISIBLE_DEVICES`` the job runs with (None: left unset).
    """

    devices: list[dict[str, Any]]
    source: str
    visible: str | None
    _files: list[IO[str]] = field(default_factory=list, repr=False)

    def release(self) -> None:
        """Give the slots back before the process ends (normally the exit does it)."""
        for handle in self._files:
            try:
                fcntl.flock(handle, fcntl.LOCK_UN)
            finally:
                handle.close()
        self._files.clear()

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "cuda_visible_devices": self.visible,
            "devices": self.devices,
        }


def _split(value: str) -> list[str]:
    value = value.strip()
    if value.lower() in ("", "none", "-1"):
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


def _nvidia_smi() -> str | None:
    return shutil.which("nvidia-smi")


def query_gpus() -> dict[str, dict[str, Any]]:
    """``{index: {"index", "name", "memory_mb", "uuid"}}`` from ``nvidia-smi``; {} without it."""
    exe = _nvidia_smi()
    if exe is None:
        return {}
    try:
        out = subprocess.run(
            [
                exe,
                "--query-gpu=index,name,memory.total,uuid",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as err:
        logger.warning("nvidia-smi --query-gpu failed (%s); GPU names and memory unknown", err)
        return {}
    found = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        memory = int(float(parts[2])) if re.fullmatch(r"[\d.]+", parts[2]) else None
        found[parts[0]] = {
            "index": int(parts[0]),
            "name": parts[1],
            "memory_mb": memory,
            "uuid": parts[3] if len(parts) > 3 else None,
        }
    return found


def available_gpus() -> list[str]:
    """The device ids this machine shares between jobs (see the module docstring for the order)."""
    if "MELREPRO_GPUS" in os.environ:
        return _split(os.environ["MELREPRO_GPUS"])
    if "CUDA_VISIBLE_DEVICES" in os.environ and "SLURM_JOB_ID" not in os.environ:
        return _split(os.environ["CUDA_VISIBLE_DEVICES"])
    exe = _nvidia_smi()
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "-L"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as err:
        logger.warning("nvidia-smi -L failed (%s): treating this machine as GPU-less", err)
        return []
    return re.findall(r"^GPU (\d+):", out, re.M)


def _describe(ids: list[str]) -> list[dict[str, Any]]:
    known = query_gpus() if ids else {}
    by_uuid = {d["uuid"]: d for d in known.values() if d.get("uuid")}
    out = []
    for i in ids:
        info = known.get(i) or by_uuid.get(i)
        if info is None:
            out.append({"index": int(i) if i.isdigit() else i, "name": None, "memory_mb": None})
        else:
            out.append({k: info[k] for k in ("index", "name", "memory_mb")})
    return out


def _lock_dir() -> Path:
    return Path(os.environ.get("MELREPRO_GPU_LOCK_DIR", ".snakemake/gpu_slots"))


def _try_lock(directory: Path, device: str) -> IO[str] | None:
    handle = (directory / f"gpu-{device}.lock").open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def _publish(claim: GpuClaim) -> GpuClaim:
    os.environ[CLAIM_ENV] = json.dumps(claim.as_dict())
    if claim.devices:
        names = ", ".join(
            f"GPU {d['index']} ({d['name'] or 'unknown'}, "
            f"{d['memory_mb'] if d['memory_mb'] is not None else '?'} MiB)"
            for d in claim.devices
        )
        logger.info(
            "This job's GPUs (%s): %s; CUDA_VISIBLE_DEVICES=%s", claim.source, names, claim.visible
        )
    else:
        logger.info(
            "No GPU for this job (%s); CUDA_VISIBLE_DEVICES=%s", claim.source, claim.visible
        )
    _HELD.append(claim)
    return claim


def claim_gpus(n: int, *, timeout: float | None = None, poll: float = 0.5) -> GpuClaim:
    """Own ``n`` GPUs for the rest of this process and set ``CUDA_VISIBLE_DEVICES`` to them.

    Call it before anything initialises CUDA (before the first ``torch.cuda`` call).

    Parameters
    ----------
    n : int
        The job's ``gpu`` resource. 0 hides every GPU when the machine shares some (a CPU job
        must not land on a GPU another job owns).
    timeout : float, optional
        Seconds to wait for free slots (None: wait as long as it takes; Snakemake's ``gpu``
        count means a slot frees up soon unless ``--resources gpu`` exceeds the devices).
    poll : float
        Seconds between attempts.

    Raises
    ------
    RuntimeError
        More GPUs asked for than the machine shares, or ``timeout`` passed.
    """
    n = int(n or 0)
    if "SLURM_JOB_ID" in os.environ:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = _split(visible) if visible is not None else []
        if n > 0 and len(ids) < n:
            logger.warning(
                "SLURM job %s asked for %d GPU(s) but CUDA_VISIBLE_DEVICES=%r",
                os.environ["SLURM_JOB_ID"],
                n,
                visible,
            )
        return _publish(GpuClaim(_describe(ids), "slurm", visible))
    pool = available_gpus()
    if not pool:
        return _publish(GpuClaim([], "none", os.environ.get("CUDA_VISIBLE_DEVICES")))
    if n == 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return _publish(GpuClaim([], "none", ""))
    if n > len(pool):
        raise RuntimeError(
            f"this job asks for gpu={n} but the machine shares {len(pool)} GPU(s) {pool} "
            "(set MELREPRO_GPUS or lower the rule's gpu resource)"
        )
    directory = _lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    warned = False
    while True:
        held: list[tuple[str, IO[str]]] = []
        for device in pool:
            handle = _try_lock(directory, device)
            if handle is not None:
                held.append((device, handle))
                if len(held) == n:
                    break
        if len(held) == n:
            break
        # All or nothing: holding some while waiting for more could deadlock two jobs.
        for _, handle in held:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        if timeout is not None and time.monotonic() - start > timeout:
            raise RuntimeError(
                f"no {n} free GPU slot(s) of {pool} in {directory} after {timeout:.0f} s "
                "(is --resources gpu larger than the number of GPUs?)"
            )
        if not warned:
            logger.info("Waiting for %d free GPU slot(s) of %s in %s", n, pool, directory)
            warned = True
        time.sleep(poll)
    ids = [device for device, _ in held]
    visible = ",".join(ids)
    os.environ["CUDA_VISIBLE_DEVICES"] = visible
    return _publish(GpuClaim(_describe(ids), "slots", visible, [h for _, h in held]))
