"""Rule make_rehearsal_<dataset>: draw the images of one dataset's official rows (the rehearsal)."""

from pathlib import Path

from melrepro.data.rehearsal import read_task2_rows, write_rehearsal_archive
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
dataset = snakemake.params.dataset
outdir = Path(snakemake.output.lock).parent  # resources/archives/<dataset>
rows = None
if dataset == "isic2018_task2":
    image_list = Path(snakemake.input.rows[-1])  # common.smk rehearsal_row_files: the list last
    rows = read_task2_rows(image_list, outdir.parent / "isic2019", outdir.parent / "isic2017")
write_rehearsal_archive(
    dataset,
    outdir,
    image_size=snakemake.params.image_size,
    seed=snakemake.params.seed,
    archive_dir=snakemake.params.archive_dir,
    checksums=snakemake.params.checksums,
    rows=rows,
    melanoma_limit=snakemake.params.melanoma_limit,
)
