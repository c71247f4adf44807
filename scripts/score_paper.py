"""Rule score_paper: paper value vs reproduced value for every number a paper reports."""

from pathlib import Path

from melrepro.report.logs import log_to_file
from melrepro.report.scorecard import score_paper

log_to_file(snakemake.log[0])
card = score_paper(
    snakemake.input.paper_values,
    snakemake.params.tables_dir,
    data_source=snakemake.params.data_source,
    quantities_path=snakemake.input.quantities,
    margins_path=snakemake.input.margins,
    paper=snakemake.wildcards.paper,
)
Path(snakemake.output.scorecard).parent.mkdir(parents=True, exist_ok=True)
card.to_csv(snakemake.output.scorecard, index=False)
