"""The execution profiles: local default and SLURM, consistent with the rules that need a GPU."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _rules_with_gpu() -> set[str]:
    rules = set()
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = path.read_text()
        for match in re.finditer(r"^\s*rule (\w+):(.*?)(?=^\s*rule \w+:|\Z)", text, re.S | re.M):
            if re.search(r"^\s*gpu=1,", match.group(2), re.M):
                rules.add(match.group(1))
    return rules


def test_slurm_profile_sends_every_gpu_rule_to_the_gpu_partition():
    """Check every rule declaring gpu=1 is listed for the GPU partition, and only existing rules are."""
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    listed = set(profile["set-resources"])
    listed_rules = subprocess.run(
        [sys.executable, "-m", "snakemake", "--list-rules"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert listed <= set(listed_rules)
    gpu_rules = _rules_with_gpu()
    assert gpu_rules, "no rule declares gpu=1"
    assert gpu_rules <= listed
    for settings in profile["set-resources"].values():
        assert "gres" not in settings  # the plugin refuses gres together with the rules' gpu=1


def test_default_profile_does_not_cap_gpus():
    """Check the local profile leaves `gpu` unset, so `--resources gpu=N` decides (and CPU runs proceed)."""
    profile = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    assert "resources" not in profile


def test_slurm_profile_loads_in_the_executor_plugin():
    """Check `snakemake -n --profile profiles/slurm` accepts the profile (plugin installed, keys valid)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--profile",
            "profiles/slurm",
            "--quiet",
            "rules",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
