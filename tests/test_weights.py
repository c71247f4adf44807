"""Offline compute nodes: with pretrained: true the ImageNet weights are fetched by a local rule
into resources/torch_home before the trainings that need them."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pretrained_runs_fetch_the_weights_first(tmp_path):
    """Check a dry run with pretrained: true schedules fetch_torchvision_weights for
    efficientnet_b0 and resnet18, as inputs of train_effnet_ham and extract_gcn_mil_features,
    and that the rule is local (runs on the login node, which has internet)."""
    (tmp_path / "pre.yaml").write_text("pretrained: true\n")
    targets = [
        "results/effnet_ham/models/baseline2/metrics.json",
        "results/gcn_mil/features/shard-000.pt",
    ]
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(tmp_path),
    ]
    cmd += ["--configfile", str(ROOT / "config/config.yaml"), str(tmp_path / "pre.yaml")]
    proc = subprocess.run([*cmd, "--cores", "1", *targets], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(re.findall(r"wildcards: model=(\w+)", proc.stdout)) == {
        "efficientnet_b0",
        "resnet18",
    }
    for rule in ("train_effnet_ham", "extract_gcn_mil_features"):
        block = re.search(rf"rule {rule}:\n(.*?)\n\n", proc.stdout, re.S).group(1)
        assert "resources/torch_home/" in block
    text = (ROOT / "workflow/rules/weights.smk").read_text()
    assert re.search(r"localrules:\s+fetch_torchvision_weights", text)
