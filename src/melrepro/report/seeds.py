"""Trainings repeated over seeds: the seed of each, and tables that aggregate them.

A paper's ``n_seeds`` trains every model ``n_seeds`` times. Seed index 0 is the run's global
``seed`` itself (so a one-seed run is exactly the run without seeds); index ``i`` trains with
:func:`training_seed`. Tables then hold one row per seed and :func:`aggregate_seeds` folds them
into one row per model: each metric column the mean over seeds, ``<metric> SD`` the seeds'
sample SD, ``<metric> CI low`` / ``<metric> CI high`` a Student-t 95 % interval of the mean over
seeds (:func:`~melrepro.report.tables.mean_interval`; the scorecard judges by it) and a
``Seeds`` column with their number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from melrepro.report.tables import mean_interval

__all__ = [
    "SEED_STRIDE",
    "SEEDS_COLUMN",
    "aggregate_seeds",
    "seeds_markdown",
    "seeds_title",
    "training_seed",
    "write_seed_table",
]

#: Distance between the seeds of consecutive seed indices: far apart from the small offsets
#: (seed + 1, seed + 2...) that code adds to a run's seed for its own streams.
SEED_STRIDE = 1000
#: The column that says how many seeds a row aggregates (the scorecard names it).
SEEDS_COLUMN = "Seeds"


def training_seed(seed: int, index: int) -> int:
    """The seed of training ``index`` (0-based) of a run whose global seed is ``seed``."""
    if index < 0:
        raise ValueError(f"seed index {index} < 0")
    return int(seed) + SEED_STRIDE * int(index)


def aggregate_seeds(table: pd.DataFrame, metric_columns: Sequence[str]) -> pd.DataFrame:
    """One row per index key of ``table`` (whose rows with the same key are one seed each).

    Each of ``metric_columns`` becomes the mean over the key's rows, followed by ``<c> SD``
    (sample SD, ddof 1) and ``<c> CI low`` / ``<c> CI high`` (Student-t 95 % interval of the
    mean; these replace any per-seed interval columns); ``Seeds`` (last) counts the rows. Every
    other column is the first seed's. A table whose keys are all unique (one seed) comes back
    unchanged, so one-seed tables keep their bytes. Rows computed or trained once (reference
    rows, label-shuffled controls) may stand beside the seeded ones: their ``Seeds`` is 1, their
    SD and interval empty.

    Raises
    ------
    ValueError
        Keys with different numbers of rows other than 1 (a seed missing for some model).
    """
    if table.index.is_unique:
        return table
    levels = list(range(table.index.nlevels))
    groups = table.groupby(level=levels, sort=False)
    sizes = groups.size()
    if sizes[sizes > 1].nunique() != 1:
        raise ValueError(f"unequal numbers of seeds per row: {sizes.to_dict()}")
    out = table[~table.index.duplicated(keep="first")].copy()
    for column in metric_columns:
        values = groups[column]
        out[column] = values.mean().reindex(out.index).to_numpy()
        stats = {
            f"{column} SD": values.std(ddof=1),
            f"{column} CI low": values.apply(lambda v: mean_interval(v)[0]),
            f"{column} CI high": values.apply(lambda v: mean_interval(v)[1]),
        }
        position = out.columns.get_loc(column) + 1
        for name, series in stats.items():
            if name in out.columns:
                out = out.drop(columns=name)
            out.insert(position, name, series.reindex(out.index).to_numpy())
            position += 1
    out[SEEDS_COLUMN] = sizes.reindex(out.index).astype(int).to_numpy()
    return out


def seeds_markdown(table: pd.DataFrame, metric_columns: Sequence[str]) -> pd.DataFrame:
    """The readers' view of an aggregated table: each metric cell ``mean ± SD``, no SD columns."""
    view = table.copy()
    for column in metric_columns:
        mean, sd = view[column].astype(float), view[f"{column} SD"].astype(float)
        view[column] = [
            "" if np.isnan(m) else f"{m:.4g}" if np.isnan(s) else f"{m:.4g} ± {s:.2g}"
            for m, s in zip(mean, sd, strict=True)
        ]
        view = view.drop(columns=f"{column} SD")
    return view


def seeds_title(title: str, n_seeds: int) -> str:
    """``title`` saying that the table aggregates ``n_seeds`` seeds, and how."""
    return (
        f"{title}. Mean ± SD over {n_seeds} seeds (metric columns; '<metric> SD' beside each, "
        "'CI low/high': Student-t 95 % interval of the mean over seeds; other columns: the "
        "first seed's)"
    )


def write_seed_table(
    table: pd.DataFrame, output, *, title: str, metric_columns: Sequence[str]
) -> pd.DataFrame:
    """:func:`aggregate_seeds` then :func:`~melrepro.report.tables.write_table`: a table over
    seeds gets ``mean ± SD`` cells in its ``.md`` and says its number of seeds in its title; a
    one-seed table is written as it is. Returns the table written to the CSV."""
    from melrepro.report.tables import write_table

    table = aggregate_seeds(table, metric_columns)
    if SEEDS_COLUMN not in table.columns:
        write_table(table, output, title=title)
        return table
    n_seeds = int(table[SEEDS_COLUMN].max())
    write_table(
        table,
        output,
        title=seeds_title(title, n_seeds),
        markdown=seeds_markdown(table, metric_columns),
    )
    return table
