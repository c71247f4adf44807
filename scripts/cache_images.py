"""Rule cache_images: one shard of one dataset at one working resolution."""

from melrepro.data.imagecache import cache_images
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
cache_images(
    snakemake.input.manifest,
    snakemake.params.folder,
    int(snakemake.wildcards.shard),
    snakemake.wildcards.res,
    snakemake.output.shard,
)
