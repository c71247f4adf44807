"""Rule train_gcn_mil: one GCN-MIL training run on the cached bags (resumes from its checkpoint)."""

from melrepro.methods.gpu_slots import claim_gpus
from melrepro.papers.gcn_mil.train import train_gcn_mil
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
# This job's own GPU(s), before torch initialises CUDA (see melrepro.methods.gpu_slots).
claim_gpus(snakemake.resources.get("gpu", 0))
train_gcn_mil(
    snakemake.input.features,
    snakemake.output.model,
    snakemake.output.history,
    snakemake.params.checkpoint_dir,
    run=int(snakemake.wildcards.run),
    seed=snakemake.params.seed,
    adjacency=snakemake.params.adjacency,
    radius_factor=snakemake.params.radius_factor,
    model=snakemake.params.model,
    shuffle_labels=snakemake.params.shuffle_labels,
    train=snakemake.params.train,
    device=snakemake.params.device,
    threads=snakemake.threads,
    run_info=snakemake.params.run_info,
    metrics_path=snakemake.output.metrics,
)
