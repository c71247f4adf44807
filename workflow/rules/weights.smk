# Offline GPU nodes: torchvision's ImageNet weights fetched once, on the login node, into
# resources/torch_home (torchvision checks their SHA-256 prefix), before any training starts.
# Every job of this workflow runs with TORCH_HOME there, so compute nodes without internet run
# `pretrained: true`. Rules that build a pretrained backbone add
# `weights=torchvision_weights(<model name>)` (common.smk) to their input (empty unless
# pretrained: true).

import os


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
        torch_home=lambda wc, output: os.path.dirname(output.marker),
    script:
        "../../scripts/fetch_torchvision_weights.py"
