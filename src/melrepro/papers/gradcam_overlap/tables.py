"""gradcam_overlap tables: table00-table06, their test-split supplements and fig04/fig05's CSVs.

:func:`tabulate` (rule ``tabulate_gradcam_overlap``) reads the classifiers' predictions and the
per-shard overlap tables and writes every table through :mod:`melrepro.report.tables`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melrepro.data.cellcounts import CHANNELS
from melrepro.papers.gradcam_overlap import FEATURE_LABELS, THRESHOLDS, jaccard_column
from melrepro.papers.gradcam_overlap.evaluate import (
    class_metrics,
    overlap_tables,
    read_overlap_tables,
)

__all__ = ["CONTROL_SUFFIX", "TABLE00_METRICS", "tabulate"]

#: Appended to a model's label (table00's Model, table02/table03's Feature) in its control's rows.
CONTROL_SUFFIX = " (label-shuffled control)"
#: table00's columns that vary between seeds: mean +- SD when the classifiers train several seeds.
TABLE00_METRICS = ("Accuracy", "Sensitivity", "Overall accuracy", "Balanced accuracy")


def _table00(
    predictions: Mapping[str, str | Path],
    labels: Mapping[str, str],
    models: list[str],
    seed_predictions: Mapping[str, Sequence[str | Path]],
    controls: Mapping[str, str],
) -> pd.DataFrame:
    """Per-class test metrics of every model, one block per model and seed (first seed first),
    then one per control."""
    blocks = []
    runs = [
        (key, path) for key in models for path in [predictions[key], *seed_predictions.get(key, [])]
    ]
    runs += [(key, predictions[key]) for key in controls]
    for key, path in runs:
        preds = pd.read_parquet(path)
        test = preds[preds["split"] == "test"]
        block = class_metrics(test["label"], test["prediction"])
        label = labels[controls[key]] + CONTROL_SUFFIX if key in controls else labels[key]
        block.insert(0, "Model", label)
        blocks.append(block)
    return pd.concat(blocks, ignore_index=True).set_index(["Model", "Class"])


def _table01(
    overlap: Mapping[str, pd.DataFrame], labels: Mapping[str, str], models: list[str]
) -> pd.DataFrame:
    """Image counts: MEL+NV images per feature, samples, classes, constant maps per model."""
    first = overlap[models[0]]
    mel_nv = first[first["label"].isin(["MEL", "NV"])]
    counts = {FEATURE_LABELS[c]: int(mel_nv[f"has__{c}"].sum()) for c in CHANNELS}
    counts |= {
        "Samples": len(mel_nv),
        "MEL": int((mel_nv["label"] == "MEL").sum()),
        "NV": int((mel_nv["label"] == "NV").sum()),
        "All task-2 images": len(first),
    }
    counts |= {f"Constant maps {labels[k]}": int(overlap[k]["constant_map"].sum()) for k in models}
    return pd.DataFrame([{"Images": "MEL+NV", **counts}]).set_index("Images")


def _add_paper_u(
    mw: pd.DataFrame, paper_u: pd.DataFrame, paper_n: pd.DataFrame, label: str, group_id: str
) -> None:
    """Add the paper's U of every row of ``mw`` and whether it exceeds the paper's n1 n2.

    ``paper_u``: the paper values of table06's U; ``paper_n``: those of table04/05's counts.
    """
    for i, row in mw.iterrows():
        cls = row["Vs."].split("-")[0]
        u = paper_u.loc[paper_u["row"] == f"{label} / {row['Vs.']}", "value"]
        # paper values are read as printed (strings): compare as numbers
        n = pd.to_numeric(
            paper_n[paper_n["artifact"] == group_id].set_index("row")["value"],
            errors="coerce",
        )
        n1, n2 = n.get(f"{cls}-correct"), n.get(f"{cls}-wrong")
        mw.loc[i, "paper U"] = float(u.iloc[0]) if len(u) else np.nan
        mw.loc[i, "paper U exceeds paper n1 n2"] = bool(
            len(u)
            and n1 is not None
            and n2 is not None
            and float(u.iloc[0]) > float(n1) * float(n2)
        )


def _with_control_row(
    features: pd.DataFrame,
    overlap: Mapping[str, pd.DataFrame],
    key: str,
    controls: Mapping[str, str],
    restrict: str | None,
) -> pd.DataFrame:
    """Table02/03 with the union row of ``key``'s label-shuffled control appended (if any)."""
    for control, model in controls.items():
        if model != key:
            continue
        table = overlap[control]
        if restrict:
            table = table[table["isic2019_split"] == restrict]
        row = overlap_tables(table)["features"].loc[[FEATURE_LABELS["union"]]]
        row.index = [FEATURE_LABELS["union"] + CONTROL_SUFFIX]
        row.index.name = features.index.name
        features = pd.concat([features, row])
    return features


def _statistics_tables(
    overlap: Mapping[str, pd.DataFrame],
    labels: Mapping[str, str],
    models: list[str],
    paper: pd.DataFrame,
    out: dict[str, pd.DataFrame],
    controls: Mapping[str, str],
) -> None:
    """Add table02-table06 and their ``_test`` supplements (classifier test split only) to ``out``.

    The first model fills table02/table04, the second table03/table05; table06 has both. A
    model's label-shuffled control (``controls``: control key -> model key) adds its union row
    to the model's table02/table03.
    """
    paper_u = paper[(paper["artifact"] == "table06") & (paper["column"] == "U")]
    paper_n = paper[paper["artifact"].isin(["table04", "table05"]) & (paper["column"] == "count")]
    for subset_name, restrict in (("", None), ("_test", "test")):
        mw_rows = []
        for key, table_id, group_id in zip(
            models, ("table02", "table03"), ("table04", "table05"), strict=False
        ):
            table = overlap[key]
            if restrict:
                table = table[table["isic2019_split"] == restrict]
            result = overlap_tables(table)
            out[f"{table_id}{subset_name}"] = _with_control_row(
                result["features"], overlap, key, controls, restrict
            )
            out[f"{group_id}{subset_name}"] = result["groups"]
            mw = result["mann_whitney"]
            mw.insert(0, "Model", labels[key])
            mw["U exceeds n1 n2"] = mw["U"] > mw["n1"] * mw["n2"]
            if not restrict:
                _add_paper_u(mw, paper_u, paper_n, labels[key], group_id)
            mw_rows.append(mw)
        out[f"table06{subset_name}"] = pd.concat(mw_rows, ignore_index=True).set_index(
            ["Model", "Vs."]
        )


def _example_jaccards(
    overlap: Mapping[str, pd.DataFrame], models: list[str], example: str
) -> dict[str, pd.DataFrame]:
    """fig04/fig05's CSVs: the example image's union Jaccard at every threshold, per model."""
    out = {}
    for key, fig_id in zip(models, ("fig04", "fig05"), strict=False):
        row = overlap[key][overlap[key]["image_id"] == example]
        if row.empty:
            raise ValueError(f"example image {example!r} is not among the task-2 images")
        out[fig_id] = pd.DataFrame(
            {
                "Threshold": [f"{t:.1f}" for t in THRESHOLDS],
                "Jaccard": [float(row.iloc[0][jaccard_column("union", t)]) for t in THRESHOLDS],
            }
        ).set_index("Threshold")
    return out


def _titles(labels: Mapping[str, str], models: list[str], example: str) -> dict[str, str]:
    """The title of every table (the ``_test`` supplements say so after it)."""
    return {
        "table00": "Table 0 (paper §3): ISIC 2019 test split, per-class accuracy and sensitivity",
        "table01": "Table 1: task-2 MEL+NV images with a non-empty mask",
        "table02": f"Table 2: {labels[models[0]]} best threshold and Jaccard per feature",
        "table03": f"Table 3: {labels[models[-1]]} best threshold and Jaccard per feature",
        "table04": f"Table 4: {labels[models[0]]} union, MEL/NV x correct/wrong",
        "table05": f"Table 5: {labels[models[-1]]} union, MEL/NV x correct/wrong",
        "table06": "Table 6: Mann-Whitney U, correct vs wrong, at the global union threshold",
        "fig04": f"Fig. 4: {labels[models[0]]} Jaccard of {example} by threshold",
        "fig05": f"Fig. 5: {labels[models[-1]]} Jaccard of {example} by threshold",
    }


def tabulate(
    predictions: Mapping[str, str | Path],
    overlap_tables_paths: Mapping[str, Sequence[str | Path]],
    labels: Mapping[str, str],
    *,
    paper_values_path: str | Path,
    example: str,
    tables_dir: str | Path,
    run_info: Mapping[str, Any],
    seed_predictions: Mapping[str, Sequence[str | Path]] | None = None,
    controls: Mapping[str, str] | None = None,
) -> dict[str, pd.DataFrame]:
    """Write table00-table06, the test-split supplements and fig04/fig05's Jaccard CSVs.

    Parameters
    ----------
    predictions : model key -> predictions.parquet of
        :func:`~melrepro.papers.gradcam_overlap.train.train_classifier`
    overlap_tables_paths : model key -> the per-shard tables of
        :func:`~melrepro.papers.gradcam_overlap.evaluate.compute_overlap`
    labels : model key -> label in the tables (VGG16, RESNET50); the first model is the paper's
        VGG16 (table02, table04, fig03, fig04), the second its ResNet50.
    paper_values_path : path
        ``config/paper_values/gradcam_overlap.csv``: table06 flags paper U values above n1 n2.
    example : str
        The task-2 image of fig04/fig05 (``ISIC_0000013`` on the real data).
    seed_predictions : model key -> predictions.parquet of its further seeds (n_seeds > 1)
        table00 then reads mean +- SD over the seeds; Grad-CAM (table01-table06, fig04/fig05)
        stays on the first seed's model, ``predictions``.
    controls : mapping, optional
        Label-shuffled control key -> its model key; the controls' predictions and overlap
        tables are in ``predictions`` and ``overlap_tables_paths`` too. Each adds a block to
        table00 and a union row to its model's table02/table03 (marked by
        :data:`CONTROL_SUFFIX`); nothing else.
    """
    from melrepro.report.runinfo import write_run_info
    from melrepro.report.scorecard import read_paper_values
    from melrepro.report.seeds import write_seed_table
    from melrepro.report.tables import write_table

    tables_dir = Path(tables_dir)
    controls = dict(controls or {})
    models = [key for key in predictions if key not in controls]
    table00 = _table00(predictions, labels, models, seed_predictions or {}, controls)
    out: dict[str, pd.DataFrame] = {"table00": table00}
    overlap = {key: read_overlap_tables(overlap_tables_paths[key]) for key in predictions}
    out["table01"] = _table01(overlap, labels, models)
    paper = read_paper_values(paper_values_path)
    _statistics_tables(overlap, labels, models, paper, out, controls)
    out |= _example_jaccards(overlap, models, example)

    titles = _titles(labels, models, example)
    for name, df in out.items():
        base = name.removesuffix("_test")
        title = titles.get(base, name)
        if name.endswith("_test"):
            title += " (supplement: only images in the classifier's test split)"
        if name == "table00":  # the classifiers, over seeds where there are several
            out[name] = write_seed_table(
                df, tables_dir / f"{name}.csv", title=title, metric_columns=TABLE00_METRICS
            )
            continue
        write_table(df, tables_dir / f"{name}.csv", title=title)
    write_run_info(
        tables_dir,
        data_source=run_info["data_source"],
        config={"labels": dict(labels), "example": example, "controls": controls},
        seed=run_info.get("seed"),
        weights="see results/gradcam_overlap/models/<model>/run_info.json",
    )
    return out
