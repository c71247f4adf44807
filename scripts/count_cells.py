"""Rule count_cells: per-cell pixel counts of the task-2 feature masks on one saliency grid."""

from melrepro.data.cellcounts import count_cells
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
count_cells(
    snakemake.input.manifest,
    snakemake.params.folder,
    int(snakemake.wildcards.shard),
    snakemake.wildcards.grid,
    snakemake.output.shard,
)
