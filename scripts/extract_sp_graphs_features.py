"""Rule extract_sp_graphs_features: every feature block of the images of one cache shard."""

from melrepro.papers.sp_graphs.features import extract_features_shard
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
extract_features_shard(
    snakemake.input.cache,
    snakemake.input.manifest,
    snakemake.output.features,
    settings=snakemake.params.settings,
    splits=snakemake.params.splits,
    max_images=snakemake.params.max_images,
    threads=snakemake.threads,
)
