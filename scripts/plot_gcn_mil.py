"""Rule plot_gcn_mil: Figures 2-6 of the gcn_mil paper."""

from melrepro.papers.gcn_mil.figures import plot_gcn_mil
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
plot_gcn_mil(
    snakemake.input.manifest,
    snakemake.input.split,
    snakemake.input.caches,
    snakemake.input.features,
    snakemake.input.predictions,
    snakemake.input.scores,
    snakemake.input.sweeps,
    snakemake.input.metrics,
    dict(snakemake.output.items()),
    bags=snakemake.params.bags,
    n_cases=snakemake.params.n_cases,
    seed=snakemake.params.seed,
    run_info=snakemake.params.run_info,
)
