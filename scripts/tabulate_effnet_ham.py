"""Rule tabulate_effnet_ham: table01, test metrics of every variant at the Youden threshold."""

from melrepro.papers.effnet_ham.tables import tabulate_results
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
tabulate_results(
    list(snakemake.input.metrics),
    snakemake.params.labels,
    snakemake.output.table,
    validation_rows=snakemake.params.validation_rows,
    run_info=snakemake.params.run_info,
)
