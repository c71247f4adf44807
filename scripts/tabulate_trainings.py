"""Rule tabulate_trainings: one row per training of every active paper (trainings.csv and .md)."""

from pathlib import Path

from melrepro.report.logs import log_to_file
from melrepro.report.runinfo import write_run_info
from melrepro.report.tables import write_table
from melrepro.report.trainings import training_table

log_to_file(snakemake.log[0])
table = training_table(snakemake.input.histories)
write_table(table, snakemake.output.table, title="Trainings")
info = snakemake.params.run_info
write_run_info(
    Path(snakemake.output.run_info).parent,
    data_source=info["data_source"],
    config={"papers": snakemake.params.papers},
    seed=info["seed"],
    pretrained=info["pretrained"],
    device_requested=info["device"],
    note="Weights and device of each model are in its own run_info.json under results/<paper>/models/.",
)
