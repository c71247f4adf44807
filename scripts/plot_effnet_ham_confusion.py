"""Rule plot_effnet_ham_confusion: fig03, test confusion matrix at the Youden threshold."""

from melrepro.papers.effnet_ham.figures import plot_confusion
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
plot_confusion(snakemake.input.predictions, snakemake.output.figure)
