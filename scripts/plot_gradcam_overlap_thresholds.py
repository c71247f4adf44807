"""Rules plot_gradcam_overlap_thresholds_<model>: fig04/fig05, the example map at 11 thresholds."""

from melrepro.papers.gradcam_overlap.figures import plot_thresholds
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
plot_thresholds(
    snakemake.input.manifest,
    snakemake.params.folder,
    list(snakemake.input.maps),
    snakemake.input.jaccard,
    snakemake.params.label,
    snakemake.params.example,
    snakemake.output.figure,
)
