"""Rule plot_siim2020_examples: fig11 (true positives) / fig12 (false negatives) of Base Small."""

from melrepro.papers.siim2020.figures import plot_examples
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
plot_examples(
    snakemake.input.predictions,
    list(snakemake.input.images),
    snakemake.output.figure,
    kind=snakemake.params.kind,
    n=snakemake.params.n_examples,
)
