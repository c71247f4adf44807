"""Rule build_siim2020_datasets: cleaning, split, All/Small/3aug/5aug and evaluation set of one protocol."""

from melrepro.papers.siim2020.datasets import write_datasets
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
write_datasets(
    snakemake.input.manifest,
    snakemake.input.split,
    list(snakemake.input.brightness),
    snakemake.output.rows,
    snakemake.output.counts,
    protocol=snakemake.wildcards.protocol,
    seed=snakemake.params.seed,
    benign_per_patient=snakemake.params.benign_per_patient,
    copies=snakemake.params.copies,
    author_code=snakemake.params.author_code,
)
