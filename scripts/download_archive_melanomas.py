"""Rule download_archive_melanomas: the extra archive melanomas, via isic-cli, checked."""

from melrepro.data.download import download_archive_melanomas
from melrepro.data.pinned_ids import pinned_ids_for_run
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
download_archive_melanomas(
    snakemake.output.images,
    query=snakemake.params.query,
    limit=snakemake.params.limit,
    checksums=snakemake.params.checksums,
    archive_dir=snakemake.params.archive_dir,
    chunk_mb=snakemake.params.chunk_mb,
    cache_dir=snakemake.params.cache_dir,
    rejected_dir=snakemake.params.rejected_dir,
    # None when the list is empty and data.archive_melanomas.accept_unpinned is set.
    pinned_ids=pinned_ids_for_run(
        snakemake.input.pinned_ids,
        limit=snakemake.params.limit,
        accept_unpinned=snakemake.params.accept_unpinned,
    ),
)
