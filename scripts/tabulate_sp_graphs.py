"""Rule tabulate_sp_graphs: tables 1-12 of the sp_graphs paper."""

from pathlib import Path

from melrepro.papers.sp_graphs.tables import write_tables
from melrepro.report.logs import log_to_file
from melrepro.report.runinfo import write_run_info

log_to_file(snakemake.log[0])
outputs = dict(snakemake.output.items())
# the label-shuffled control's CV, when configured, gives table07 its marked rows
controls = {"label_shuffled": snakemake.input.control[0]} if snakemake.input.control else {}
write_tables(
    dict(zip(snakemake.params.tables, snakemake.input.metrics, strict=True)) | controls,
    snakemake.input.paper_values,
    outputs,
    main_protocol=snakemake.params.protocol,
)
# one job writes the run record of every sp_graphs folder (shard and fold jobs run in parallel)
cv_dir = Path(snakemake.input.metrics[0]).parent
for folder in (Path(outputs["table01"]).parent, cv_dir, *cv_dir.parent.glob("features/*")):
    write_run_info(folder, config=snakemake.params.config, **snakemake.params.run_info)
