"""Rule plot_gradcam_overlap_masks: fig01, the example image, its segmentation and feature masks."""

from melrepro.papers.gradcam_overlap.figures import plot_example_masks
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
plot_example_masks(
    snakemake.input.manifest,
    snakemake.params.folder,
    snakemake.params.example,
    snakemake.output.figure,
)
