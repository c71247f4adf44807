"""The scorecard: every number a paper reports for its own method, next to the reproduced value."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from melrepro.data.archive_io import at_row, first_row
from melrepro.report.tables import ROW_SEPARATOR

__all__ = ["PAPER_VALUE_COLUMNS", "lookup", "read_paper_values", "score_paper", "summarize"]

logger = logging.getLogger(__name__)

PAPER_VALUE_COLUMNS = ("artifact", "row", "column", "value", "kind")


def read_paper_values(path: str | Path) -> pd.DataFrame:
    """Read ``config/paper_values/<paper>.csv`` and check its columns and ``kind`` values.

    Raises
    ------
    ValueError
        A missing column, or a ``kind`` other than ``own``/``cited`` (file and row named).
    """
    values = pd.read_csv(path, dtype={"artifact": str, "row": str, "column": str, "kind": str})
    missing = [c for c in PAPER_VALUE_COLUMNS if c not in values.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; expected {list(PAPER_VALUE_COLUMNS)}"
        )
    bad = ~values["kind"].isin(["own", "cited"])
    if bad.any():
        row = first_row(bad)
        raise ValueError(
            f"{at_row(str(path), row, 'kind')}: "
            f"{values['kind'].iloc[row]!r}; expected 'own' or 'cited'"
        )
    return values


def lookup(table: pd.DataFrame, row: str, column: str) -> float | None:
    """The value at (``row``, ``column``) of a table CSV read without index.

    ``row`` is matched against the first column, then the first two joined by
    :data:`~melrepro.report.tables.ROW_SEPARATOR`, and so on (tables write their index levels first).
    """
    if column not in table.columns:
        return None
    for depth in range(1, table.shape[1]):
        keys = table.iloc[:, :depth].astype(str).agg(ROW_SEPARATOR.join, axis=1)
        hits = table.loc[keys == row, column]
        if len(hits) == 1:
            value = pd.to_numeric(hits.iloc[0], errors="coerce")
            return None if pd.isna(value) else float(value)
    return None


def score_paper(
    paper_values_path: str | Path, tables_dir: str | Path, *, data_source: str
) -> pd.DataFrame:
    """Paper value, reproduced value and difference for every ``own`` row of the paper values."""
    values = read_paper_values(paper_values_path)
    own = values[values["kind"] == "own"]
    rows = []
    cache: dict[str, pd.DataFrame | None] = {}
    for record in own.itertuples(index=False):
        if record.artifact not in cache:
            path = Path(tables_dir) / f"{record.artifact}.csv"
            cache[record.artifact] = pd.read_csv(path) if path.exists() else None
        table = cache[record.artifact]
        reproduced = None if table is None else lookup(table, record.row, record.column)
        if reproduced is None:
            logger.warning(
                "no reproduced value for %s / %s / %s", record.artifact, record.row, record.column
            )
        paper = float(record.value)
        rows.append(
            {
                "artifact": record.artifact,
                "row": record.row,
                "column": record.column,
                "paper_value": paper,
                "reproduced_value": reproduced,
                "difference": None if reproduced is None else reproduced - paper,
                "data_source": data_source,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "artifact",
            "row",
            "column",
            "paper_value",
            "reproduced_value",
            "difference",
            "data_source",
        ],
    )


def summarize(scorecards: dict[str, pd.DataFrame]) -> str:
    """Markdown summary: per paper, how many numbers were reproduced and their mean |difference|."""
    lines = [
        "# Scorecard",
        "",
        "| paper | numbers reported | reproduced | median abs. difference | median relative difference | data |",
        "|---|---|---|---|---|---|",
    ]
    for paper, card in scorecards.items():
        found = card["reproduced_value"].notna()
        difference = card.loc[found, "difference"].abs()
        # Tables mix counts and rates: the relative difference compares them on one scale.
        relative = difference / card.loc[found, "paper_value"].abs().where(lambda v: v > 0)
        median = difference.median() if found.any() else float("nan")
        median_relative = relative.median() if relative.notna().any() else float("nan")
        source = ", ".join(sorted(set(card["data_source"]))) or "-"
        lines.append(
            f"| {paper} | {len(card)} | {int(found.sum())} | {median:.4g} | "
            f"{median_relative:.1%} | {source} |"
        )
    lines += [
        "",
        "Differences on `synthetic` data only show that the pipeline runs end to end; they say",
        "nothing about the papers' claims. Run with `--configfile config/isic.yaml` for real numbers.",
        "",
    ]
    return "\n".join(lines)
