# Offline GPU nodes: torchvision's ImageNet weights fetched once, on the login node, into
# resources/torch_home (torchvision checks their SHA-256 prefix), before any training starts.
# Every job of this workflow runs with TORCH_HOME there, so compute nodes without internet run
# `pretrained: true`. Rules that build a pretrained backbone add
# `weights=torchvision_weights(<model name>)` to their input (empty unless pretrained: true).

import os

TORCH_HOME = "resources/torch_home"
# Set here, at parse time, so local jobs inherit it and SLURM jobs (which re-read this file) too.
os.environ["TORCH_HOME"] = os.path.abspath(TORCH_HOME)


def torchvision_weights(model):
    """The marker of ``model``'s fetched ImageNet weights, or [] when pretrained is off."""
    return [f"{TORCH_HOME}/{model}.json"] if config.get("pretrained") else []


localrules:
    fetch_torchvision_weights,


rule fetch_torchvision_weights:
    output:
        marker=f"{TORCH_HOME}/{{model}}.json",
    log:
        "logs/fetch_torchvision_weights/{model}.log",
    benchmark:
        "benchmarks/results/fetch_torchvision_weights/{model}.tsv"
    wildcard_constraints:
        model=r"[a-z0-9_]+",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        torch_home=TORCH_HOME,
    script:
        "../../scripts/fetch_torchvision_weights.py"
