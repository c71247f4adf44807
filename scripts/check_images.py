"""Rule check_images: decode every image of one shard once and check its masks."""

from melrepro.data.manifests import write_check_shard
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
write_check_shard(
    snakemake.params.folder,
    snakemake.wildcards.dataset,
    int(snakemake.wildcards.shard),
    snakemake.output.checks,
    n_shards=snakemake.params.n_shards,
)
