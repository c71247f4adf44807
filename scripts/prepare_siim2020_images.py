"""Rule prepare_siim2020_images: one JPEG q60 round trip of a cache shard, and its brightness."""

from melrepro.papers.siim2020.images import prepare_images
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
prepare_images(
    [snakemake.input.cache],
    snakemake.output.images,
    snakemake.output.brightness,
    jpeg_quality=snakemake.params.jpeg_quality,
)
