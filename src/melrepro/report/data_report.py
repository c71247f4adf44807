"""The data artifacts of the report: how many images of each class each dataset and split holds."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from melrepro.report.figures import new_figure, save_figure
from melrepro.report.tables import write_table

__all__ = ["class_counts", "write_class_counts"]

logger = logging.getLogger(__name__)

_SPLITS = ["train", "val", "test"]


def class_counts(manifests: list[pd.DataFrame]) -> pd.DataFrame:
    """Images per (dataset, label) and official split, with a total column."""
    frame = pd.concat(
        [m[["dataset", "official_split", "label"]] for m in manifests], ignore_index=True
    )
    table = (
        frame.groupby(["dataset", "label", "official_split"], observed=True)
        .size()
        .unstack("official_split", fill_value=0)
    )
    table = table.reindex(columns=[s for s in _SPLITS if s in table.columns], fill_value=0)
    table["total"] = table.sum(axis=1)
    table.columns.name = None
    return table.astype(int)


def write_class_counts(
    manifest_paths: list[str | Path], table_path: str | Path, figure_path: str | Path
) -> None:
    """Write the class-count table (csv + md) and a bar chart per dataset."""
    table = class_counts([pd.read_parquet(p) for p in manifest_paths])
    write_table(table, table_path, title="Images per class and official split")
    datasets = list(dict.fromkeys(table.index.get_level_values("dataset")))
    fig, axes = new_figure(len(datasets), 1, figsize=(8, 2.2 * len(datasets)), squeeze=False)
    for ax, dataset in zip(axes[:, 0], datasets, strict=True):
        sub = table.loc[dataset].drop(columns="total")
        sub.plot.barh(stacked=True, ax=ax, width=0.7)
        ax.set_title(dataset, loc="left", fontsize=10)
        ax.set_xlabel("images")
        ax.set_ylabel("")
        ax.legend(title="split", fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("Images per class and official split")
    save_figure(fig, figure_path)
