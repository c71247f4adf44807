"""Rule ingest_dataset: validate one dataset's archives and write its manifest."""

from pathlib import Path

from melrepro.data.manifests import ingest_dataset, manifest_metadata
from melrepro.data.pinned_ids import pinned_ids_for_run
from melrepro.report.logs import log_to_file
from melrepro.report.runinfo import write_run_info

log_to_file(snakemake.log[0])
# The archive melanomas of a real run: exactly the pinned ids (none for other datasets).
pinned = snakemake.params.pinned
pinned_ids = (
    pinned_ids_for_run(snakemake.input.pinned_ids[0], **pinned)
    if snakemake.input.pinned_ids
    else None
)
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
    pinned_ids=pinned_ids,
)
info = snakemake.params.run_info
write_run_info(
    Path(snakemake.output.run_info).parent,
    data_source=info["data_source"],
    config=snakemake.params.config,
    seed=info["seed"],
    manifest=manifest_metadata(snakemake.output.manifest),
)
