"""One GPU per job: the fcntl slot allocator, driven by Snakemake with ``--resources gpu=2``.

No GPU here: a stub ``nvidia-smi`` on PATH lists two fake devices, and each job records the
``CUDA_VISIBLE_DEVICES`` it was given with its start and end times.
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from melrepro.methods import gpu_slots

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

STUB = """#!/bin/sh
if [ "$1" = "-L" ]; then
  echo "GPU 0: Fake A100 (UUID: GPU-aaaa)"
  echo "GPU 1: Fake A100 (UUID: GPU-bbbb)"
else
  echo "0, Fake A100, 40960, GPU-aaaa"
  echo "1, Fake A100, 40960, GPU-bbbb"
fi
"""

JOB = """
import json, os, sys, time
from melrepro.methods.gpu_slots import claim_gpus
claim = claim_gpus(int(sys.argv[2]))
start = time.time()
time.sleep(float(sys.argv[3]))
record = {"visible": os.environ["CUDA_VISIBLE_DEVICES"], "start": start, "end": time.time(),
          "devices": claim.devices}
open(sys.argv[1], "w").write(json.dumps(record))
"""

SNAKEFILE = """
JOBS = range(6)
rule all:
    input: expand("out/job{{i}}.json", i=JOBS)
rule gpu_job:
    output: "out/job{{i}}.json"
    resources: gpu=1
    shell: "{python} job.py {{output}} {{resources.gpu}} 1.5"
"""


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    """Two fake GPUs behind a stub nvidia-smi; lock files in tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "nvidia-smi"
    stub.write_text(STUB)
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(SRC))
    for name in ("MELREPRO_GPUS", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "MELREPRO_GPU_DEVICES"):
        monkeypatch.setenv(name, "")  # so that teardown restores the caller's value
        monkeypatch.delenv(name)
    monkeypatch.setenv("MELREPRO_GPU_LOCK_DIR", str(tmp_path / "locks"))
    return tmp_path


def test_snakemake_jobs_get_a_gpu_of_their_own(fake_gpus):
    """Check 6 gpu=1 jobs under --cores 4 --resources gpu=2: at most two at once, overlapping
    jobs never share a device, both devices are used, and each job knows its device's name."""
    work = fake_gpus
    (work / "job.py").write_text(JOB)
    (work / "Snakefile").write_text(textwrap.dedent(SNAKEFILE.format(python=sys.executable)))
    cmd = [sys.executable, "-m", "snakemake", "--cores", "4", "--resources", "gpu=2", "-q"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [json.loads(p.read_text()) for p in sorted((work / "out").glob("job*.json"))]
    assert len(jobs) == 6
    overlapping = [
        (a, b)
        for i, a in enumerate(jobs)
        for b in jobs[i + 1 :]
        if a["start"] < b["end"] and b["start"] < a["end"]
    ]
    # Snakemake did run jobs in parallel (otherwise the next checks would prove nothing).
    assert overlapping
    for a, b in overlapping:
        assert a["visible"] != b["visible"]
    for job in jobs:
        running = sum(other["start"] <= job["start"] < other["end"] for other in jobs)
        assert running <= 2
    assert {job["visible"] for job in jobs} == {"0", "1"}
    assert all(job["devices"][0]["name"] == "Fake A100" for job in jobs)
    assert all(job["devices"][0]["memory_mb"] == 40960 for job in jobs)


def test_a_sigkilled_job_frees_its_slot(fake_gpus):
    """Check a job holding both GPUs blocks a third claim, and SIGKILL frees its slots at once."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from melrepro.methods.gpu_slots import claim_gpus\n"
            "claim_gpus(2)\nprint('held', flush=True)\ntime.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match="no 1 free GPU slot"):
            gpu_slots.claim_gpus(1, timeout=0.5, poll=0.1)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        t0 = time.monotonic()
        claim = gpu_slots.claim_gpus(2, timeout=5, poll=0.1)
        assert time.monotonic() - t0 < 2
        assert os.environ["CUDA_VISIBLE_DEVICES"] in ("0,1", "1,0")
        assert json.loads(os.environ["MELREPRO_GPU_DEVICES"])["source"] == "slots"
        claim.release()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_slurm_keeps_the_devices_it_was_given(fake_gpus, monkeypatch):
    """Check a job inside SLURM keeps the scheduler's CUDA_VISIBLE_DEVICES and takes no lock."""
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    claim = gpu_slots.claim_gpus(1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert claim.source == "slurm"
    assert claim.devices == [{"index": 1, "name": "Fake A100", "memory_mb": 40960}]
    assert not (fake_gpus / "locks").exists()


def test_device_list_from_environment_and_errors(fake_gpus, monkeypatch):
    """Check MELREPRO_GPUS overrides nvidia-smi, a gpu=0 job is hidden from the GPUs, a CPU
    machine claims nothing, and asking for more GPUs than exist is a clear error."""
    monkeypatch.setenv("MELREPRO_GPUS", "3,5")
    assert gpu_slots.available_gpus() == ["3", "5"]
    claim = gpu_slots.claim_gpus(1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] in ("3", "5")
    claim.release()
    with pytest.raises(RuntimeError, match="gpu=3 but the machine shares 2"):
        gpu_slots.claim_gpus(3)
    gpu_slots.claim_gpus(0)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    monkeypatch.setenv("MELREPRO_GPUS", "none")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    claim = gpu_slots.claim_gpus(1)
    assert claim.source == "none"
    assert claim.devices == []
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_every_gpu_rule_script_claims_its_gpu():
    """Check each rule declaring a gpu resource runs a script that calls claim_gpus first."""
    found = 0
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = path.read_text()
        for match in re.finditer(r"^\s*rule (\w+):(.*?)(?=^\s*rule \w+:|\Z)", text, re.S | re.M):
            body = match.group(2)
            if not re.search(r"^\s*gpu=", body, re.M):
                continue
            script = re.search(r'script:\s*"([^"]+)"', body)
            assert script, f"rule {match.group(1)} asks for a GPU but runs no script"
            code = (path.parent / script.group(1)).resolve().read_text()
            assert "claim_gpus(" in code, f"{script.group(1)} does not call claim_gpus"
            found += 1
    assert found >= 3
