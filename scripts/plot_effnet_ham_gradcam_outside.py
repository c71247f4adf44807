"""Rule plot_effnet_ham_gradcam_outside: fig06, Grad-CAM cases with saliency outside the lesion."""

from melrepro.papers.effnet_ham.figures import plot_gradcam_outside
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
plot_gradcam_outside(snakemake.input.maps, snakemake.input.table, snakemake.output.figure)
