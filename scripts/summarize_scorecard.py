"""Rule summarize_scorecard: one Markdown page over every paper's scorecard."""

from pathlib import Path

import pandas as pd

from melrepro.report.logs import log_to_file
from melrepro.report.scorecard import summarize

log_to_file(snakemake.log[0])
cards = {Path(p).stem: pd.read_csv(p) for p in snakemake.input.scorecards}
Path(snakemake.output.summary).write_text(summarize(cards), encoding="utf-8")
