"""Rule plot_learning_curves: training and validation loss per epoch of one paper's trainings."""

from melrepro.report.logs import log_to_file
from melrepro.report.trainings import plot_learning_curves

log_to_file(snakemake.log[0])
plot_learning_curves(snakemake.input.histories, snakemake.output.figure)
