"""Rule plot_siim2020_data: fig02 (colour swatches), fig03/fig04 (extremes), fig13 (age violins)."""

from melrepro.papers.siim2020.figures import plot_age_violins, plot_colour_swatches, plot_extremes
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
figure = snakemake.wildcards.figure
inputs = snakemake.input
if figure == "fig02":
    plot_colour_swatches(
        inputs.manifest,
        list(inputs.brightness),
        snakemake.output.figure,
        n_random=snakemake.params.n_random,
        seed=snakemake.params.seed,
    )
elif figure in ("fig03", "fig04"):
    plot_extremes(
        inputs.manifest,
        list(inputs.brightness),
        list(inputs.images),
        snakemake.output.figure,
        target=1 if figure == "fig03" else 0,
        n=snakemake.params.n_extremes,
    )
else:
    plot_age_violins(inputs.manifest, snakemake.output.figure)
