"""The execution profiles: local default and SLURM, consistent with the rules that need a GPU;
resources that grow with the attempt, local short rules, no GPU asked for with device: cpu."""

import os
import re
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import yaml
from test_workflow import _copy_workflow
from workflow_rules import parse_workflow, rule_facts

ROOT = Path(__file__).resolve().parents[1]


def _rules_with_gpu() -> set[str]:
    """Rules that ask for a GPU under the embedded default (device: auto)."""
    return {
        name for name, facts in rule_facts().items() if facts["resources"].get("gpu", [0])[0] >= 1
    }


def test_slurm_profile_sends_every_gpu_rule_to_the_gpu_partition():
    """Check every rule asking for a GPU is listed for the GPU partition, and only existing rules are."""
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
    assert gpu_rules, "no rule asks for a GPU"
    assert gpu_rules <= listed
    for settings in profile["set-resources"].values():
        assert "gres" not in settings  # gpu=1 already asks for the GPU (sbatch --gpus=1)


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


# ---------------------------------------------------------------- cluster polish


def _config_resources(config: dict) -> dict[str, tuple[int, int | None]]:
    """Rule -> (mem_mb, runtime) as the config gives them (None: the rule file's own runtime)."""
    gcn = config["gcn_mil"]["mem_mb"]
    effnet, siim, gradcam = config["effnet_ham"], config["siim2020"], config["gradcam_overlap"]
    return {
        "extract_gcn_mil_features": (gcn["extract"], None),
        "train_gcn_mil": (gcn["train"], None),
        "evaluate_gcn_mil": (gcn["evaluate"], None),
        "tabulate_gcn_mil": (gcn["tabulate"], None),
        "plot_gcn_mil": (gcn["plot"], None),
        "train_effnet_ham": (effnet["mem_mb"], effnet["runtime"]),
        "compute_effnet_ham_gradcam": (effnet["mem_mb"], None),
        "train_siim2020": (siim["mem_mb"], siim["runtime"]),
        "train_gradcam_overlap": (gradcam["mem_mb"], gradcam["runtime"]),
        "compute_gradcam_overlap": (gradcam["gradcam_mem_mb"], None),
    }


def test_config_resources_grow_with_the_attempt():
    """Check every rule taking mem_mb (and runtime) from config/isic.yaml asks for the configured
    value on the first attempt and twice that on the second (what --retries resubmits after an
    out-of-memory or time-limit kill), and a fixed-size rule stays the same."""
    parsed = parse_workflow(configfiles=("config/isic.yaml",))
    rules, expected = parsed["rules"], _config_resources(parsed["config"])
    for name, (mem_mb, runtime) in expected.items():
        resources = rules[name]["resources"]
        assert resources["mem_mb"] == [mem_mb, 2 * mem_mb], name
        first, second = resources["runtime"]
        assert second == 2 * first, name
        if runtime is not None:
            assert first == runtime, name
    assert (
        rules["score_paper"]["resources"]["mem_mb"][0]
        == rules["score_paper"]["resources"]["mem_mb"][1]
    )


#: Rules that are local because they need the internet (compute nodes often have none).
NETWORK_RULES = ("download_*", "link_archive_file", "verify_archives", "fetch_torchvision_weights")
#: What "short" means for a local rule under config/isic.yaml.
SHORT_RUNTIME, SHORT_MEM_MB = 10, 4000


def test_short_rules_run_on_the_submitting_host():
    """Check tables, figures, scorecard, run info and rule graphs are local rules when they are
    short under config/isic.yaml, and every other local rule is a network one: no training, no
    GPU rule, nothing long or large on the login node."""
    for configfiles in ((), ("config/isic.yaml",)):
        facts = rule_facts(configfiles=configfiles)
        local = {name for name, f in facts.items() if f["local"]}
        report_like = re.compile(
            r"(tabulate|plot|score|summarize|draw_rulegraph)_\w+|write_folder_run_info|"
            r"count_classes|write_siim2020_submission|copy_deviations"
        )
        assert {"tabulate_gcn_mil", "score_paper", "draw_rulegraph_sp_graphs"} <= local
        for name in local:
            if any(fnmatch(name, p) for p in NETWORK_RULES):
                continue
            resources = facts[name]["resources"]
            assert report_like.fullmatch(name), name
            assert not name.startswith("train_"), name
            assert "gpu" not in resources, name
            if configfiles:
                assert resources["runtime"][0] <= SHORT_RUNTIME, name
                assert resources["mem_mb"][0] <= SHORT_MEM_MB, name
        if configfiles:
            short = {
                name
                for name, f in facts.items()
                if report_like.fullmatch(name)
                and f["resources"]["runtime"][0] <= SHORT_RUNTIME
                and f["resources"]["mem_mb"][0] <= SHORT_MEM_MB
            }
            assert short - local == set()
            assert "plot_gcn_mil" not in local  # 16 GB on the full-resolution images


def _gpu_requests(dry_run: str) -> dict[str, int]:
    """Rule -> the largest gpu resource among its planned jobs (0 when it asks for none)."""
    out = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head:
            gpus = re.search(r"resources:.*\bgpu=(\d+)", block)
            out[head.group(1)] = max(out.get(head.group(1), 0), int(gpus.group(1)) if gpus else 0)
    return out


def test_cpu_device_plans_no_gpu(tmp_path):
    """Check a dry run of the embedded default plans gpu=1 for the training rules with
    device: auto, and no job with a GPU with device: cpu (SLURM would reserve one idle)."""
    workdir = _copy_workflow(tmp_path)

    def plan(*args: str) -> dict[str, int]:
        result = subprocess.run(
            [sys.executable, "-m", "snakemake", "-n", *args],
            cwd=workdir,
            env={**os.environ, "PYTHONPATH": str(workdir / "src")},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return _gpu_requests(result.stdout + result.stderr)

    auto = plan()
    assert {"train_effnet_ham", "train_gcn_mil", "train_siim2020"} <= {
        name for name, gpus in auto.items() if gpus >= 1
    }
    cpu = plan("--config", "device=cpu")
    assert set(cpu) == set(auto)
    assert {name for name, gpus in cpu.items() if gpus} == set()
