"""Rule plot_effnet_ham_loss: fig02, training and validation loss per epoch."""

from melrepro.papers.effnet_ham.figures import plot_loss_curves
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
plot_loss_curves(snakemake.input.history, snakemake.output.figure)
