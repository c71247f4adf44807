"""Rule train_siim2020: train one (protocol, model, dataset), threshold on the evaluation set."""

from melrepro.methods.gpu_slots import claim_gpus
from melrepro.methods.threads import job_threads
from melrepro.papers.siim2020.train import train_model_on
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
# This job's own GPU(s), before torch initialises CUDA (see melrepro.methods.gpu_slots).
claim_gpus(snakemake.resources.get("gpu", 0))
train_model_on(
    snakemake.input.manifest,
    snakemake.input.rows,
    snakemake.input.counts,
    list(snakemake.input.images),
    protocol=snakemake.wildcards.protocol,
    model=snakemake.wildcards.model,
    dataset=snakemake.wildcards.dataset,
    train=snakemake.params.train,
    head=snakemake.params.head,
    augment=snakemake.params.augment,
    sites=snakemake.params.sites,
    tpr_range=snakemake.params.tpr_range,
    checkpoint_dir=snakemake.params.checkpoint_dir,
    model_path=snakemake.output.model,
    history_path=snakemake.output.history,
    predictions_path=snakemake.output.predictions,
    metrics_path=snakemake.output.metrics,
    run_info=snakemake.params.run_info,
    # the config's threads, not the grant: results must not depend on --cores
    threads=job_threads(snakemake.config["siim2020"]["threads"], snakemake.threads),
)
