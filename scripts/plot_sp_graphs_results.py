"""Rule plot_sp_graphs_results: figure 5 (AUC bars) and figure 6 (selected-feature composition)."""

from pathlib import Path

from melrepro.papers.sp_graphs.figures import plot_results
from melrepro.report.logs import log_to_file
from melrepro.report.runinfo import write_run_info

log_to_file(snakemake.log[0])
tables = snakemake.params.tables
plot_results(
    dict(zip(tables, snakemake.input.metrics, strict=True)),
    dict(zip(tables, snakemake.input.selection, strict=True)),
    snakemake.output.fig05,
    snakemake.output.fig06,
)
write_run_info(
    Path(snakemake.output.fig05).parent, config=snakemake.params.config, **snakemake.params.run_info
)
