"""Rule evaluate_gcn_mil: test metrics and Eq. 3 segmentation (eta chosen on training) of one run."""

from melrepro.methods.gpu_slots import claim_gpus
from melrepro.papers.gcn_mil.evaluate import evaluate_gcn_mil
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
# This job's own GPU(s), before torch initialises CUDA (see melrepro.methods.gpu_slots).
claim_gpus(snakemake.resources.get("gpu", 0))
evaluate_gcn_mil(
    snakemake.input.model,
    snakemake.input.features,
    snakemake.input.caches,
    snakemake.output.predictions,
    snakemake.output.sweep,
    snakemake.output.metrics,
    snakemake.output.scores,
    thresholds=snakemake.params.thresholds,
    device=snakemake.params.device,
    threads=snakemake.threads,
    run_info=snakemake.params.run_info,
)
