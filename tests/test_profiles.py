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


def test_default_profile_sets_nothing_the_slurm_profile_sets_differently():
    """Check profiles/default (which Snakemake merges in and lets win) cannot override the SLURM
    profile: every key both set has the same value (it once forced latency-wait 5 on SLURM)."""
    default = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    slurm = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert slurm["latency-wait"] >= 60
    assert slurm["slurm-status-command"] == "squeue"
    clashes = {k for k in set(default) & set(slurm) if default[k] != slurm[k]}
    assert clashes == set()
    partitions = {v["slurm_partition"] for v in slurm["set-resources"].values()}
    assert len(partitions) == 1  # one GPU partition name, set in one place (a YAML anchor)


def _checker():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "check_slurm_resources", ROOT / "scripts" / "check_slurm_resources.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_resource_checker_parses_sinfo_and_finds_misfits():
    """Check the sinfo/time parsing on hand-made output and that only the too-large requests
    are named (known answer)."""
    check = _checker()
    assert check.parse_time("infinite") == float("inf")
    assert check.parse_time("1-02:00:00") == 1560
    assert check.parse_time("30:00") == 30
    nodes = check.parse_sinfo(
        "cpu*|16|64000|(null)|2-00:00:00\ngpu|8|32000|gpu:a100:2(S:0-1)|1-00:00:00\n"
        "gpu|32|128000|gpu:4|12:00:00\n"
    )
    assert nodes["cpu"] == check.Node(16, 64000, 0, 2880)
    assert nodes["gpu"] == check.Node(32, 128000, 4, 1440)
    rules = check.parse_dry_run(
        "rule train:\n    threads: 8\n    resources: mem_mb=64000, gpu=1, "
        "slurm_partition=gpu, runtime=2880\n"
        "localrule plot:\n    resources: mem_mb=1000, slurm_partition=cpu, runtime=5\n"
        "rule big:\n    threads: 24\n    resources: mem_mb=1000, slurm_partition=cpu, runtime=5\n"
    )
    assert check.misfits(rules, nodes) == [
        "big: threads=24 but partition cpu has 16 CPUs",
        "train: runtime=2880 but partition gpu has 1440 minutes",
    ]
