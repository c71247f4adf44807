"""The benchmarks run (at toy sizes): their numbers go into closing notes, so they must not rot.

Nothing here is timed; the ratios they print are read by people, not asserted."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.mark.parametrize("recipe", ["effnet_ham", "gradcam_overlap_resnet50"])
def test_bench_training_measures_a_recipe_with_the_core_loader(recipe):
    """Check bench_training runs a recipe (the v2 pipeline; the dihedral one) through
    training.TrainLoader with workers and prints its loader, first-epoch, step and goal lines."""
    args = ["--recipe", recipe, "--n", "16", "--batch", "4", "--size", "32", "--repeat", "1"]
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_training.py"), *args, "--step-batch", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"[{recipe}]" in proc.stdout
    for line in ("loader (CPU aug)", "loader (uint8)", "1st epoch", "step (cpu)", "goal"):
        assert line in proc.stdout, (line, proc.stdout)


GPU_CHECK = BENCHMARKS / "gpu_check.sh"


def _load(name: str):
    """A benchmark script as a module (its constants; main() does not run)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _script_array(name: str) -> list[str]:
    """The words of a bash array ``NAME=(...)`` in gpu_check.sh."""
    match = re.search(rf"^{name}=\(([^)]*)\)", GPU_CHECK.read_text(), re.MULTILINE)
    assert match, name
    return match.group(1).split()


def _rules_with_a_gpu() -> set[str]:
    """The rules of workflow/rules/*.smk whose resources declare gpu=..."""
    rules = set()
    for path in (BENCHMARKS.parent / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^\s*rule ", path.read_text(), flags=re.MULTILINE)[1:]:
            name = block.split(":", 1)[0].strip()
            if re.search(r"^\s+gpu=", block, re.MULTILINE):
                rules.add(name)
    return rules


def test_gpu_check_parses_and_knows_every_gpu_rule():
    """Check gpu_check.sh is valid bash and its GPU_RULES are exactly the workflow's rules that
    declare a GPU (a new GPU rule must join the check), the leaves among them."""
    assert subprocess.run(["bash", "-n", str(GPU_CHECK)], check=False).returncode == 0
    gpu_rules = _script_array("GPU_RULES")
    assert set(gpu_rules) == _rules_with_a_gpu()
    assert set(_script_array("LEAF_GPU_RULES")) < set(gpu_rules)


def _gpu_check(tmp_path: Path, device: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "GPU_CHECK_DEVICE": device,
        "GPU_CHECK_OUT": str(tmp_path / "out"),
        "PYTHON": sys.executable,
    }
    return subprocess.run(
        ["bash", str(GPU_CHECK)], capture_output=True, text=True, env=env, timeout=900
    )


def test_gpu_check_runs_its_pipeline_on_the_cpu_with_one_row_per_recipe(tmp_path):
    """Check GPU_CHECK_DEVICE=cpu runs every step (gpu tests collected, both benchmarks' AMP
    lines with bf16 autocast at tiny sizes, the workflow's GPU rules planned), exits 0 and prints
    one summary row per recipe and one per GPU rule with its planned jobs."""
    proc = _gpu_check(tmp_path, "cpu")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.split("== gpu_check summary", 1)[1].splitlines()
    recipes = [*_load("bench_training").RECIPES, "gcn_mil extraction default 1/7"]
    assert len(recipes) == 5
    for recipe in recipes:
        rows = [line for line in summary if line.startswith(recipe + " ")]
        assert len(rows) == 1, (recipe, summary)
        # device, AMP dtype (gcn_mil's extraction autocast is CUDA-only), a positive rate
        assert re.search(r"^\S.*\s+cpu\s+(bfloat16|off)\s+\d+\.\d", rows[0]), rows[0]
    for rule in _script_array("GPU_RULES"):
        line = next(r for r in summary if r.startswith(rule + " "))
        assert int(line.split()[1]) >= 1, line
    assert "all steps passed" in summary
    assert not any(line.startswith("FAILURES") for line in summary)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_gpu_check_without_cuda_stops_after_the_device_step_and_says_so(tmp_path):
    """Check gpu_check.sh on a machine without CUDA exits 1 right after the device step (no
    workflow run) and still prints the summary, with the failed step and the missing rows."""
    proc = _gpu_check(tmp_path, "cuda")
    assert proc.returncode == 1, proc.stdout
    summary = proc.stdout.split("== gpu_check summary", 1)[1]
    assert "step device: 1" in summary
    assert "no benchmark row for effnet_ham" in summary
    assert not (tmp_path / "out" / "workflow").exists()
