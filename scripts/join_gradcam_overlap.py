"""Rule join_gradcam_overlap: task-2 images with their ISIC 2019 label and classifier split."""

from melrepro.papers.gradcam_overlap.datasets import join_task2
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
join_task2(
    snakemake.input.task2,
    snakemake.input.isic2019,
    snakemake.input.split,
    snakemake.output.join,
    isic2017_manifest=snakemake.input.isic2017,
)
