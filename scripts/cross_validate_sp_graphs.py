"""Rule cross_validate_sp_graphs: stratified k-fold CV of the seven classifiers for one table."""

from melrepro.papers.sp_graphs.evaluate import cross_validate_table
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
cross_validate_table(
    list(snakemake.input.features),
    list(snakemake.input.manifests),
    snakemake.output.metrics,
    snakemake.output.selection,
    table=snakemake.wildcards.table,
    protocol=snakemake.params.protocol,
    **snakemake.params.cv,
)
