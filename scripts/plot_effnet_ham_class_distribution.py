"""Rule plot_effnet_ham_class_distribution: fig01, benign/malignant counts per split."""

from melrepro.papers.effnet_ham.figures import plot_class_distribution
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
plot_class_distribution(
    snakemake.input.manifest,
    snakemake.input.split,
    snakemake.output.figure,
    malignant_labels=snakemake.params.malignant_labels,
)
