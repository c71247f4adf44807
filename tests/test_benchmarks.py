"""The benchmarks run (at toy sizes): their numbers go into closing notes, so they must not rot.

Nothing here is timed; the ratios they print are read by people, not asserted."""

import subprocess
import sys
from pathlib import Path

import pytest

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
