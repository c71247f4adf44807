"""Rule tabulate_siim2020: table01 (every training at its threshold, the reference rows) and
table02 (dataset counts)."""

from melrepro.papers.siim2020.baselines import metadata_logistic_row
from melrepro.papers.siim2020.tables import tabulate_table01, tabulate_table02
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
metadata_row = metadata_logistic_row(
    snakemake.input.manifest,
    snakemake.input.rows,
    list(snakemake.input.brightness),
    tpr_range=snakemake.params.tpr_range,
)
tabulate_table01(
    list(snakemake.input.metrics),
    snakemake.output.table01,
    references=[metadata_row],
    run_info=snakemake.params.run_info,
)
tabulate_table02(list(snakemake.input.counts), snakemake.output.table02)
