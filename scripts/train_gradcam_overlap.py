"""Rule train_gradcam_overlap: one 8-class ISIC 2019 classifier (VGG16 or ResNet50) of paper 004."""

from melrepro.methods.gpu_slots import claim_gpus
from melrepro.methods.threads import job_threads
from melrepro.papers.gradcam_overlap.train import train_classifier
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
# This job's own GPU(s), before torch initialises CUDA (see melrepro.methods.gpu_slots).
claim_gpus(snakemake.resources.get("gpu", 0))
train_classifier(
    snakemake.input.manifest,
    snakemake.input.split,
    list(snakemake.input.cache),
    model_key=snakemake.wildcards.model,
    settings=snakemake.params.settings,
    checkpoint_dir=snakemake.params.checkpoint_dir,
    model_path=snakemake.output.model,
    history_path=snakemake.output.history,
    predictions_path=snakemake.output.predictions,
    metrics_path=snakemake.output.metrics,
    run_info=snakemake.params.run_info,
    # the config's threads, not the grant: results must not depend on --cores
    threads=job_threads(snakemake.config["gradcam_overlap"]["threads"], snakemake.threads),
)
