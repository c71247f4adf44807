"""Rule download_archive_file: download one official file and check it against the lock."""

from melrepro.data.download import download_archive_file
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
download_archive_file(
    snakemake.wildcards.dataset,
    snakemake.wildcards.file,
    snakemake.output.archive,
    checksums=snakemake.params.checksums,
    hosts=snakemake.params.hosts,
    rejected_dir=snakemake.params.rejected_dir,
    **snakemake.params.download,
)
