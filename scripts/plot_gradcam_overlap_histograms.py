"""Rule plot_gradcam_overlap_histograms: fig03, Jaccard at threshold 0.5 per feature (VGG16)."""

from melrepro.papers.gradcam_overlap.figures import plot_jaccard_histograms
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
plot_jaccard_histograms(
    list(snakemake.input.tables), snakemake.params.label, snakemake.output.figure
)
