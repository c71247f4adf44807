"""Rule write_siim2020_submission: Kaggle image_name,target of Base Small, test-metadata order."""

from melrepro.papers.siim2020.evaluate import write_submission
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
write_submission(
    snakemake.input.predictions, snakemake.input.test_metadata, snakemake.output.submission
)
