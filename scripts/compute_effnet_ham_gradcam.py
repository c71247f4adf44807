"""Rule compute_effnet_ham_gradcam: Grad-CAM of every test image and its share outside the lesion."""

from melrepro.methods.threads import job_threads
from melrepro.papers.effnet_ham.evaluate import compute_gradcam
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
compute_gradcam(
    snakemake.input.model,
    snakemake.input.predictions,
    snakemake.input.manifest,
    snakemake.input.split,
    list(snakemake.input.cache),
    snakemake.output.maps,
    snakemake.output.table,
    recipe=snakemake.params.recipe,
    overrides=snakemake.params.overrides,
    malignant_labels=snakemake.params.malignant_labels,
    output_summary=snakemake.output.summary,
    archive_dir=snakemake.params.archive_dir,
    truth_dir=snakemake.params.truth_dir,
    target_layer=snakemake.params.target_layer,
    region=snakemake.params.region,
    border_width=snakemake.params.border_width,
    n_examples=snakemake.params.n_examples,
    # the config's threads, not the grant: results must not depend on --cores
    threads=job_threads(snakemake.config["effnet_ham"]["threads"], snakemake.threads),
)
