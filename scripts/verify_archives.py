"""Rule verify_archives: check every archive file of a dataset and write verified.json."""

from melrepro.data.download import verify_archives
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
verify_archives(
    snakemake.wildcards.dataset,
    list(snakemake.input.archives),
    snakemake.output.verified,
    checksums=snakemake.params.checksums,
    chunk_mb=snakemake.params.chunk_mb,
    rejected_dir=snakemake.params.rejected_dir,
)
