"""Rule link_archive_file: link one official file from data.archive_dir and check it."""

from melrepro.data.download import link_archive_file
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
link_archive_file(
    snakemake.wildcards.dataset,
    snakemake.wildcards.file,
    snakemake.output.archive,
    archive_dir=snakemake.params.archive_dir,
    checksums=snakemake.params.checksums,
    chunk_mb=snakemake.params.chunk_mb,
    rejected_dir=snakemake.params.rejected_dir,
)
