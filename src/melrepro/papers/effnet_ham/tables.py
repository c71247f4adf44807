"""effnet_ham tables: table01 from the ``metrics.json`` of every trained variant."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["METRIC_COLUMNS", "PROTOCOLS", "tabulate_results"]

#: table01's metric columns (paper §4.1) and the keys of ``metrics.json`` they come from.
METRIC_COLUMNS = {
    "AUROC": "auroc",
    "Balanced accuracy": "balanced_accuracy",
    "Macro-F1": "macro_f1",
    "Recall": "recall",
}
#: table01's protocols: (row label, metrics.json key of the test metrics, of the intervals,
#: of the threshold).
PROTOCOLS = (
    ("Youden (validation)", "test", "youden_val", "threshold"),
    ("95% specificity (test)", "test_spec95", "spec95_test", "threshold_spec95"),
)


def tabulate_results(
    metrics_paths: Sequence[str | Path],
    labels: Sequence[str],
    output: str | Path,
    *,
    run_info: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """table01: AUROC, balanced accuracy, macro-F1 and recall under both protocols.

    Two rows per variant (index ``Model, Protocol``): Youden's threshold from validation and
    the 95 %-specificity threshold from test (see :data:`PROTOCOLS`), each metric with its
    95 % bootstrap interval (``<metric> CI low/high``), the number of test images (and
    malignant ones) and the SD of the test probabilities.

    Parameters
    ----------
    metrics_paths : sequence of path
        ``metrics.json`` of each variant, in table order.
    labels : sequence of str
        Row labels (``Baseline 1``...), same order.
    output : path
        ``table01.csv`` (a ``.md`` twin is written beside it).
    run_info : mapping, optional
        ``data_source``, ``seed``...: writes ``run_info.json`` beside the table, with the
        device and weights of every variant.
    """
    from melrepro.report.tables import write_table

    if len(metrics_paths) != len(labels):
        raise ValueError(f"{len(metrics_paths)} metrics files for {len(labels)} labels")
    rows = []
    for path, label in zip(metrics_paths, labels, strict=True):
        info = json.loads(Path(path).read_text(encoding="utf-8"))
        n_test = int(info["n_images"].get("test", 0))
        n_mal = int(info["n_malignant"].get("test", 0))
        for protocol, metrics_key, interval_key, threshold_key in PROTOCOLS:
            row: dict[str, Any] = {"Model": label, "Protocol": protocol}
            for col, key in METRIC_COLUMNS.items():
                low, high = info["intervals"][interval_key][key]
                row[col] = info[metrics_key][key]
                row[f"{col} CI low"] = low
                row[f"{col} CI high"] = high
            row["Threshold"] = info[threshold_key]
            row["n test"] = n_test
            row["n malignant"] = n_mal
            row["Probability SD"] = info["probability_sd"]["test"]
            row["Epochs"] = info["epochs_run"]
            row["Best epoch"] = info["best_epoch"]
            row["Image size"] = info["image_size"]
            rows.append(row)
    table = pd.DataFrame(rows).set_index(["Model", "Protocol"])
    write_table(
        table,
        output,
        title=(
            "Table 1. Test metrics with 95 % bootstrap intervals, at Youden's threshold chosen "
            "on validation (the paper's text) and at 95 % specificity chosen on test (the "
            "authors' code)"
        ),
    )
    if run_info is not None:
        from melrepro.report.runinfo import write_run_info

        infos = [json.loads(Path(p).read_text(encoding="utf-8")) for p in metrics_paths]
        write_run_info(
            Path(output).parent,
            data_source=run_info["data_source"],
            config={"variants": [i["variant"] for i in infos]},
            seed=run_info.get("seed"),
            weights=sorted({i["weights"] for i in infos}),
            device=sorted({i["device"] for i in infos}),
            variants={
                i["variant"]: {"weights": i["weights"], "device": i["device"]} for i in infos
            },
        )
    return table
