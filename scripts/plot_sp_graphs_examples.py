"""Rule plot_sp_graphs_examples: figures 1-3 (samples, one image's graphs, superpixel levels)."""

from melrepro.papers.sp_graphs.figures import plot_examples
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
plot_examples(
    list(snakemake.input.cache),
    snakemake.input.manifest,
    snakemake.output.fig01,
    snakemake.output.fig02,
    snakemake.output.fig03,
    settings=snakemake.params.settings,
    fig02_level=snakemake.params.fig02_level,
    seed=snakemake.params.seed,
)
