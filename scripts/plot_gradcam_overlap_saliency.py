"""Rule plot_gradcam_overlap_saliency: fig02, the example image with each model's saliency map."""

from melrepro.papers.gradcam_overlap.figures import plot_saliency_example
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
models = snakemake.params.models
maps = list(snakemake.input.maps)
k = len(maps) // len(models)
plot_saliency_example(
    snakemake.input.manifest,
    snakemake.params.folder,
    {m: maps[i * k : (i + 1) * k] for i, m in enumerate(models)},
    snakemake.params.labels,
    snakemake.params.example,
    snakemake.output.figure,
)
