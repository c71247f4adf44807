"""Rule compute_gradcam_overlap: Grad-CAM maps and Jaccard curves of one task-2 shard, one model."""

from melrepro.methods.threads import job_threads
from melrepro.papers.gradcam_overlap.evaluate import compute_overlap
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
compute_overlap(
    snakemake.input.join,
    snakemake.input.model,
    snakemake.input.metrics,
    list(snakemake.input.cache),
    [snakemake.input.cells],
    shard=int(snakemake.wildcards.shard),
    layer=snakemake.params.layer,
    grid=snakemake.params.grid,
    maps_path=snakemake.output.maps,
    table_path=snakemake.output.table,
    batch_size=snakemake.params.batch_size,
    task2_archive=snakemake.params.task2_archive,
    # the config's threads, not the grant: results must not depend on --cores
    threads=job_threads(snakemake.config["gradcam_overlap"]["threads"], snakemake.threads),
)
