"""Rule train_effnet_ham: train one table01 variant, evaluate on test (Youden on validation, 95 % specificity on test)."""

from melrepro.methods.gpu_slots import claim_gpus
from melrepro.methods.threads import job_threads
from melrepro.papers.effnet_ham.train import train_variant
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
# This job's own GPU(s), before torch initialises CUDA (see melrepro.methods.gpu_slots).
claim_gpus(snakemake.resources.get("gpu", 0))
train_variant(
    snakemake.input.manifest,
    snakemake.input.split,
    list(snakemake.input.cache),
    variant=snakemake.wildcards.variant,
    recipe=snakemake.params.recipe,
    overrides=snakemake.params.overrides,
    label_shuffled=snakemake.params.label_shuffled,
    malignant_labels=snakemake.params.malignant_labels,
    checkpoint_dir=snakemake.params.checkpoint_dir,
    model_path=snakemake.output.model,
    history_path=snakemake.output.history,
    predictions_path=snakemake.output.predictions,
    metrics_path=snakemake.output.metrics,
    run_info=snakemake.params.run_info,
    # the config's threads, not the grant: results must not depend on --cores
    threads=job_threads(snakemake.config["effnet_ham"]["threads"], snakemake.threads),
    num_workers=snakemake.params.loader_workers,
    n_bootstrap=snakemake.params.n_bootstrap,
    augment_on=snakemake.params.augment_on,
)
