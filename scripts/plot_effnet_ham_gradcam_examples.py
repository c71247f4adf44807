"""Rule plot_effnet_ham_gradcam_examples: fig05, Grad-CAM of correct and incorrect predictions."""

from melrepro.papers.effnet_ham.figures import plot_gradcam_examples
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
plot_gradcam_examples(snakemake.input.maps, snakemake.input.table, snakemake.output.figure)
