"""Rule ingest_dataset: validate one dataset's archives and write its manifest."""

from pathlib import Path

from melrepro.data.manifests import ingest_dataset, manifest_metadata
from melrepro.report.logs import log_to_file
from melrepro.report.runinfo import write_run_info

log_to_file(snakemake.log[0])
ingest_dataset(
    snakemake.params.folder,
    snakemake.wildcards.dataset,
    list(snakemake.input.checks),
    snakemake.output.manifest,
    snakemake.output.quarantine,
    n_shards=snakemake.params.n_shards,
    on_undecodable=snakemake.params.on_undecodable,
    # Outside the outputs, which Snakemake deletes when the job fails.
    failed_listing=Path(snakemake.log[0]).with_suffix(".quarantine.csv"),
)
info = snakemake.params.run_info
write_run_info(
    Path(snakemake.output.run_info).parent,
    data_source=info["data_source"],
    config=snakemake.params.config,
    seed=info["seed"],
    manifest=manifest_metadata(snakemake.output.manifest),
)
