"""effnet_ham tables: table01 from the ``metrics.json`` of every trained variant."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "LABEL_PRIOR",
    "METRIC_COLUMNS",
    "PROTOCOLS",
    "VALIDATION_PROTOCOL",
    "label_prior_row",
    "tabulate_results",
]

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
#: The third row of a variant whose paper numbers are validation metrics (Baseline 1: the
#: authors' milestone 1 printed the validation metrics of its last epoch, at Youden's point
#: chosen on validation, and milestone 2 quotes them as "the baseline").
VALIDATION_PROTOCOL = (
    "Validation at the last epoch (milestone 1)",
    "val",
    "youden_val_on_val",
    "threshold",
)


#: (row label, protocol) of the label prior: computed from the test labels, never trained.
LABEL_PRIOR = ("Label prior (trivial baseline)", "Constant score, everything malignant (test)")


def label_prior_row(info: Mapping[str, Any]) -> dict[str, Any]:
    """The label prior on the test set of a variant's ``metrics.json``: one constant score
    (AUROC 0.5), everything called malignant (recall 1, balanced accuracy 1/2 = 1/n_classes,
    macro-F1 of that guess); no intervals (nothing is resampled)."""
    from melrepro.methods.controls import label_prior_metrics

    n, n_mal = int(info["n_images"]["test"]), int(info["n_malignant"]["test"])
    prior = label_prior_metrics(np.r_[np.ones(n_mal, int), np.zeros(n - n_mal, int)])
    row: dict[str, Any] = {"Model": LABEL_PRIOR[0], "Protocol": LABEL_PRIOR[1]}
    for col, key in METRIC_COLUMNS.items():
        row |= {col: prior[key], f"{col} CI low": np.nan, f"{col} CI high": np.nan}
    return row | {"n images": n, "n malignant": n_mal, "Probability SD": 0.0}


def _variant_rows(info: Mapping[str, Any], label: str, *, with_validation: bool) -> list[dict]:
    """table01's rows of one variant: one per protocol (and the milestone-1 validation row)."""
    protocols = list(PROTOCOLS)
    if with_validation:
        if info["best_epoch"] != info["epochs_run"]:
            raise ValueError(
                f"{label}: the milestone-1 validation row reads the last epoch, but the "
                f"model is epoch {info['best_epoch']} of {info['epochs_run']} (set its "
                "monitor to last_epoch)"
            )
        protocols.append(VALIDATION_PROTOCOL)
    rows = []
    for protocol, metrics_key, interval_key, threshold_key in protocols:
        split = "val" if metrics_key == "val" else "test"
        row: dict[str, Any] = {"Model": label, "Protocol": protocol}
        for col, key in METRIC_COLUMNS.items():
            low, high = info["intervals"][interval_key][key]
            row[col] = info[metrics_key][key]
            row[f"{col} CI low"] = low
            row[f"{col} CI high"] = high
        row["Threshold"] = info[threshold_key]
        row["n images"] = int(info["n_images"].get(split, 0))
        row["n malignant"] = int(info["n_malignant"].get(split, 0))
        row["Probability SD"] = info["probability_sd"][split]
        row["Epochs"] = info["epochs_run"]
        row["Best epoch"] = info["best_epoch"]
        row["Image size"] = info["image_size"]
        rows.append(row)
    return rows


def tabulate_results(
    metrics_paths: Sequence[str | Path],
    labels: Sequence[str],
    output: str | Path,
    *,
    validation_rows: Sequence[str] = (),
    run_info: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """table01: AUROC, balanced accuracy, macro-F1 and recall under both protocols, then the
    label prior of the test set (:func:`label_prior_row`).

    Two rows per variant (index ``Model, Protocol``): Youden's threshold from validation and
    the 95 %-specificity threshold from test (see :data:`PROTOCOLS`), each metric with its
    95 % bootstrap interval (``<metric> CI low/high``), the number of images (and malignant
    ones) and the SD of the probabilities of the split the row scores. The variants named in
    ``validation_rows`` add :data:`VALIDATION_PROTOCOL`: the validation metrics of the last
    epoch, at Youden's threshold chosen on validation.

    Parameters
    ----------
    metrics_paths : sequence of path
        ``metrics.json`` of each variant, in table order (several seeds of a variant: the
        same label repeated; their rows become mean +- SD, the interval then over seeds).
    labels : sequence of str
        Row labels (``Baseline 1``...), same order.
    validation_rows : sequence of str
        Labels of the variants whose paper numbers are validation metrics (``Baseline 1``).
    output : path
        ``table01.csv`` (a ``.md`` twin is written beside it).
    run_info : mapping, optional
        ``data_source``, ``seed``...: writes ``run_info.json`` beside the table, with the
        device and weights of every variant.
    """
    from melrepro.report.seeds import write_seed_table

    if len(metrics_paths) != len(labels):
        raise ValueError(f"{len(metrics_paths)} metrics files for {len(labels)} labels")
    unknown = sorted(set(validation_rows) - set(labels))
    if unknown:
        raise ValueError(f"validation rows {unknown} name no variant of {list(labels)}")
    rows = []
    for path, label in zip(metrics_paths, labels, strict=True):
        info = json.loads(Path(path).read_text(encoding="utf-8"))
        rows += _variant_rows(info, label, with_validation=label in validation_rows)
    rows.append(label_prior_row(info))
    table = pd.DataFrame(rows).set_index(["Model", "Protocol"])
    # one row set per variant and seed; write_seed_table folds the seeds into mean and SD
    table = write_seed_table(
        table,
        output,
        title=(
            "Table 1. Test metrics with 95 % bootstrap intervals, at Youden's threshold chosen "
            "on validation (the paper's text) and at 95 % specificity chosen on test (the "
            "authors' code); for Baseline 1 also the validation metrics of its last epoch at "
            "Youden's threshold chosen on validation (milestone 1, the paper's Baseline 1 "
            "numbers). n images, n malignant and Probability SD: the split the row scores. "
            "The label-shuffled control and the label prior are no rows of the paper"
        ),
        metric_columns=[*METRIC_COLUMNS, "Threshold"],
    )
    if run_info is not None:
        from melrepro.report.runinfo import write_run_info

        infos = [json.loads(Path(p).read_text(encoding="utf-8")) for p in metrics_paths]
        write_run_info(
            Path(output).parent,
            data_source=run_info["data_source"],
            config={"variants": list(dict.fromkeys(i["variant"] for i in infos))},
            seed=run_info.get("seed"),
            weights=sorted({i["weights"] for i in infos}),
            device=sorted({i["device"] for i in infos}),
            variants={
                i["variant"]: {"weights": i["weights"], "device": i["device"]} for i in infos
            },
        )
    return table
