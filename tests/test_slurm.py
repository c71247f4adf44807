"""The SLURM profile on a real single-node Slurm (tests/slurm/start_slurm.sh installs and starts it).

Runs the synthetic twin up to one effnet_ham training (8 jobs, one of them a ``gpu=1`` rule)
through ``--profile profiles/slurm`` and checks the outputs, the sbatch lines (partition,
``--gpus``), that the profile's latency-wait reaches the jobs, and that the GPU job kept the
CUDA_VISIBLE_DEVICES Slurm gave it. Skips, saying why, where Slurm cannot be installed.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "slurm"

TINY = """\
effnet_ham:
  recipe:
    image_size: 32
    epochs: 1
    freeze_epochs: 0
"""


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running test Slurm; yields the environment that reaches it."""
    state = tmp_path_factory.mktemp("slurm")
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "start_slurm.sh"), str(state)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode == 2:
        pytest.skip(f"no test Slurm here: {proc.stderr.strip()}")
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        env = {**os.environ, "SLURM_CONF": str(state / "slurm.conf")}
        env["PATH"] = f"{env['PATH']}:/usr/sbin:/sbin"
        yield env
    finally:
        subprocess.run(["bash", str(SCRIPTS / "stop_slurm.sh"), str(state)], timeout=60)


def test_workflow_runs_through_the_slurm_profile(slurm, tmp_path):
    """Check 8 jobs run on Slurm end to end: CPU rules on partition cpu, the training on
    partition gpu with --gpus=1 (granted: CUDA_VISIBLE_DEVICES set and kept), latency-wait 60."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    target = "results/effnet_ham/models/baseline2/metrics.json"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        target,
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(tmp_path),
        "--profile",
        str(ROOT / "profiles" / "slurm"),
        "--configfile",
        str(ROOT / "config" / "config.yaml"),
        str(tmp_path / "tiny.yaml"),
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--verbose",
    ]
    env = {**slurm, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert (tmp_path / target).exists()
    sbatch = re.findall(r"^sbatch call: (.*)$", log, re.M)
    rules = {re.search(r"--comment rule_(\w+?)(?:_wildcards\S*)?\s", s).group(1): s for s in sbatch}
    assert len(sbatch) == 8
    assert "train_effnet_ham" in rules
    for rule, line in rules.items():
        if rule == "train_effnet_ham":
            assert " -p gpu " in line
            assert "--gpus=1" in line
        else:
            assert " -p cpu " in line
            assert "--gpus" not in line
        # profiles/default must not override the SLURM profile's latency-wait.
        assert "--latency-wait 60" in line
    info = json.loads((tmp_path / "results/effnet_ham/models/baseline2/run_info.json").read_text())
    assert info["gpu"]["source"] == "slurm"
    assert info["gpu"]["cuda_visible_devices"] not in (None, "")


def test_resource_check_flags_requests_larger_than_the_node(slurm):
    """Check scripts/check_slurm_resources.py passes the embedded default on this 1-node Slurm
    and names the real-scale rules (8 threads, 64 GB) that would stay PENDING forever."""
    script = ROOT / "scripts" / "check_slurm_resources.py"
    env = {**slurm, "PYTHONPATH": str(ROOT / "src")}
    small = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert small.returncode == 0, small.stdout + small.stderr[-2000:]
    big = subprocess.run(
        [sys.executable, str(script), "--configfile", str(ROOT / "config" / "isic.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert big.returncode == 1, big.stdout + big.stderr[-2000:]
    cpus = os.cpu_count()
    assert (
        re.search(
            rf"^train_effnet_ham: threads=8 but partition gpu has {cpus} CPUs", big.stdout, re.M
        )
        or cpus >= 8
    )
    assert "train_gcn_mil: mem_mb=64000" in big.stdout
