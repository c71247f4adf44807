"""Rule make_synthetic_<dataset>: write the synthetic twin of one dataset's official archives."""

from pathlib import Path

from melrepro.data.synthetic import write_synthetic_archive
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
write_synthetic_archive(
    snakemake.params.dataset,
    Path(snakemake.output.truth).parents[1],  # resources/archives/<dataset>
    snakemake.params.spec,
    seed=snakemake.params.seed,
    task2_spec=snakemake.params.task2_spec,
)
