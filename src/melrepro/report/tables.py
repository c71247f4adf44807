"""Writing result tables: one CSV for machines and the same table as Markdown for readers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["ROW_SEPARATOR", "mean_interval", "read_table", "row_keys", "write_table"]

logger = logging.getLogger(__name__)

#: How the index levels of a table row are joined into one row key (used by the scorecard).
ROW_SEPARATOR = " / "


def mean_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of independent runs or CV folds (``nan, nan`` below 2).

    Tables that average runs or folds write it as ``<column> CI low`` / ``<column> CI high``, the
    columns the scorecard judges a metric by. Folds of one cross-validation share training
    images, so the interval is somewhat too narrow for them; it is still the spread the mean
    carries, where a single number carries none.
    """
    from scipy import stats

    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if len(finite) < 2:
        return float("nan"), float("nan")
    mean = float(finite.mean())
    half = float(stats.t.ppf(0.5 + level / 2, len(finite) - 1) * stats.sem(finite))
    return mean - half, mean + half


def _format_cell(value: object) -> str:
    if isinstance(value, float):
        return "" if pd.isna(value) else f"{value:.4g}"
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _markdown(df: pd.DataFrame) -> str:
    flat = df.reset_index() if _has_named_index(df) else df
    header = [str(c) for c in flat.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in flat.itertuples(index=False):
        lines.append("| " + " | ".join(_format_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _has_named_index(df: pd.DataFrame) -> bool:
    return any(name is not None for name in df.index.names)


def write_table(
    df: pd.DataFrame,
    csv_path: str | Path,
    *,
    title: str | None = None,
    markdown: pd.DataFrame | None = None,
) -> Path:
    """Write ``df`` to ``csv_path`` and the same table to ``csv_path`` with suffix ``.md``.

    ``markdown``: another view for the ``.md`` (``mean ± SD`` cells of a table over seeds).

    A named index (one level or several) is written as leading columns; it is what
    :func:`row_keys` joins into the row key the scorecard uses. Both files are written to a
    temporary name first and renamed, so a killed job never leaves half a table.

    Returns
    -------
    pathlib.Path
        The CSV path.
    """
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    md_path = csv_path.with_suffix(".md")
    tmp_csv = csv_path.with_name(csv_path.name + ".tmp")
    tmp_md = md_path.with_name(md_path.name + ".tmp")
    df.to_csv(tmp_csv, index=_has_named_index(df))
    text = (f"# {title}\n\n" if title else "") + _markdown(df if markdown is None else markdown)
    tmp_md.write_text(text, encoding="utf-8")
    tmp_md.replace(md_path)
    tmp_csv.replace(csv_path)
    logger.info("wrote %s (%d rows x %d columns)", csv_path, len(df), df.shape[1])
    return csv_path


def read_table(csv_path: str | Path, index_columns: int = 0) -> pd.DataFrame:
    """Read a table written by :func:`write_table`, with its first ``index_columns`` as index."""
    df = pd.read_csv(csv_path)
    if index_columns:
        df = df.set_index(list(df.columns[:index_columns]))
    return df


def row_keys(df: pd.DataFrame) -> list[str]:
    """The scorecard's row key of every row: the index values joined by :data:`ROW_SEPARATOR`."""
    return [
        ROW_SEPARATOR.join(str(v) for v in (key if isinstance(key, tuple) else (key,)))
        for key in df.index
    ]
