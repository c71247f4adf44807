"""Rule write_folder_run_info: run_info.json of an output folder that several rules write into."""

from pathlib import Path

from melrepro.report.logs import log_to_file
from melrepro.report.runinfo import write_run_info

log_to_file(snakemake.log[0])
info = snakemake.params.run_info
write_run_info(
    Path(snakemake.output.run_info).parent,
    data_source=info["data_source"],
    config=snakemake.params.config,
    seed=info["seed"],
    pretrained=info["pretrained"],
    device_requested=info["device"],
    note="Weights and device of each model are in its own run_info.json under results/<paper>/models/.",
)
