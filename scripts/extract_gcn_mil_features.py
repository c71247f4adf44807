"""Rule extract_gcn_mil_features: bags and frozen ResNet18 block features of one isic2017 cache shard."""

from melrepro.methods.gpu_slots import claim_gpus
from melrepro.papers.gcn_mil.features import extract_gcn_mil_features
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
# This job's own GPU(s), before torch initialises CUDA (see melrepro.methods.gpu_slots).
claim_gpus(snakemake.resources.get("gpu", 0))
extract_gcn_mil_features(
    snakemake.input.cache,
    snakemake.input.manifest,
    snakemake.input.split,
    snakemake.output.features,
    snakemake.output.zero,
    snakemake.output.run_info,
    bags=snakemake.params.bags,
    pretrained=snakemake.params.pretrained,
    seed=snakemake.params.seed,
    device=snakemake.params.device,
    threads=snakemake.threads,
    run_info=snakemake.params.run_info,
)
