"""Rule count_classes: class counts per dataset and official split, as a table and a figure."""

from melrepro.report.data_report import write_class_counts
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
write_class_counts(list(snakemake.input.manifests), snakemake.output.table, snakemake.output.figure)
