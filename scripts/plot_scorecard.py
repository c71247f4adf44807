"""Rule plot_scorecard: paper value vs reproduced value of one paper, by quantity."""

from pathlib import Path

import pandas as pd

from melrepro.report.logs import log_to_file
from melrepro.report.scorecard import plot_scorecard

log_to_file(snakemake.log[0])
plot_scorecard(
    pd.read_csv(snakemake.input.scorecard),
    snakemake.output.figure,
    paper=Path(snakemake.input.scorecard).stem,
)
