"""Tables 1-12 of the sp_graphs paper from the per-table CV metrics of
:func:`melrepro.papers.sp_graphs.evaluate.cross_validate_table`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from melrepro.methods.classical import CLASSIFIERS, METRICS
from melrepro.papers.sp_graphs.evaluate import CONTROL, PRIOR_SOURCE
from melrepro.papers.sp_graphs.variants import SIGNAL_TITLE, SIGNALS, TABLES, WEIGHTING_TITLE
from melrepro.report.tables import mean_interval

__all__ = ["CONTROL_ROW", "EDGE_DENSITY", "PRIOR_ROW", "write_tables"]

#: Column of tables 1-11 holding the mean edge density (%) of the graphs behind each row.
EDGE_DENSITY = "Edge density (%)"
#: Table 7's marked rows (not the paper's; the scorecard matches none of them): the
#: label-shuffled control per weighting and the label prior.
CONTROL_ROW = "Label-shuffled control"
PRIOR_ROW = "Label prior (computed)"


def _results_table(metrics: pd.DataFrame, row_name: str) -> pd.DataFrame:
    mean = metrics.groupby(["feature_set", "classifier"], sort=False)[list(METRICS)].mean()
    long = mean.stack().rename("value").reset_index()
    long.columns = ["feature_set", "classifier", "metric", "value"]
    wide = long.pivot_table(index=["feature_set", "metric"], columns="classifier", values="value",
                            sort=False)  # fmt: skip
    order_sets = list(dict.fromkeys(metrics["feature_set"]))
    idx = pd.MultiIndex.from_product([order_sets, list(METRICS)], names=[row_name, "Metric"])
    cols = [c for c in CLASSIFIERS if c in wide.columns]
    out = wide.reindex(index=idx, columns=cols)
    if "edge_density" in metrics.columns:  # the graphs' sparsity, one value per feature set
        density = metrics.groupby("feature_set", sort=False)["edge_density"].first()
        out[EDGE_DENSITY] = density.reindex(out.index.get_level_values(0)).to_numpy()
    # The paper reports CV means: the scorecard judges each by its 95 % interval over folds.
    grouped = metrics.groupby(["feature_set", "classifier"], sort=False)[list(METRICS)]
    ends = {}
    for bound, name in ((0, "CI low"), (1, "CI high")):
        wide_end = grouped.agg(lambda v, b=bound: mean_interval(v)[b])
        ends[name] = wide_end.stack(future_stack=True).unstack("classifier")
        ends[name].index.names = idx.names
    for classifier in cols:
        for name, end in ends.items():
            out[f"{classifier} {name}"] = end[classifier].reindex(idx).to_numpy()
    return out.round(2)


def _best_fused(metrics: pd.DataFrame) -> pd.Series:
    fused = metrics[metrics["feature_set"] == "fused"]
    mean = fused.groupby("classifier")[list(METRICS)].mean()
    return mean.max(axis=0)  # per metric, the best classifier (the paper's table 7 mixes them)


def write_tables(
    cv_metrics: Mapping[str, str | Path],
    paper_values: str | Path,
    outputs: Mapping[str, str | Path],
    *,
    main_protocol: str,
) -> None:
    """Write tables 1–12 from the CV results.

    Parameters
    ----------
    cv_metrics : mapping
        ``{"table01": metrics parquet, ..., "table07": the other protocol's fused runs}``, and
        optionally ``"label_shuffled"``: the control's (rows of table 7).
    paper_values : path
        ``config/paper_values/sp_graphs.csv`` (the cited rows of table 12 come from it).
    outputs : mapping
        ``{"table01": csv path, ..., "table12": csv path}``.
    main_protocol : str
        Protocol of tables 1–6 and 8–11.
    """
    from melrepro.report.tables import write_table

    frames = {t: pd.read_parquet(p) for t, p in cv_metrics.items()}
    for table, (graph, weighting, signal) in TABLES.items():
        row = "Pruning threshold" if table == "table11" else "Graph level"
        title = (
            f"{graph.upper()}, {WEIGHTING_TITLE[weighting].lower()} weights, "
            f"{SIGNAL_TITLE[signal].lower()} signals ({main_protocol} selection)"
        )
        write_table(_results_table(frames[table], row), outputs[table], title=title)

    t7, other_protocol = _table07(frames)
    write_table(t7, outputs["table07"],
                title=f"Best fused SEG result per metric; plain columns {main_protocol}, "
                      f"bracketed columns {other_protocol}")  # fmt: skip

    t12 = _table12(frames, paper_values)
    write_table(t12, outputs["table12"], title="Comparison with other methods (cited) and our row")


def _table07(frames: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, str]:
    """Table 7 (best fused SEG result per metric, both protocols) and the other protocol.

    Below the paper's rows: the label-shuffled control (``frames[CONTROL]``, when present: the
    same best-of-classifiers choice on permuted training labels, plain columns only) and the
    label prior (computed on the same folds; the same value in every column).
    """
    other = frames["table07"]
    other_protocol = str(other["protocol"].iloc[0]) if len(other) else "before_cv"
    rows = []
    for weighting in ("gaussian", "learned"):
        for metric in METRICS:
            rec: dict[str, Any] = {"Weights": WEIGHTING_TITLE[weighting], "Metric": metric}
            for signal in SIGNALS:
                src = next(t for t, v in TABLES.items() if v == ("seg", weighting, signal))
                rec[SIGNAL_TITLE[signal]] = _best_fused(frames[src])[metric]
                rec[f"{SIGNAL_TITLE[signal]} [{other_protocol}]"] = _best_fused(
                    other[other["source"] == src])[metric]  # fmt: skip
            rows.append(rec)
    control = frames.get(CONTROL)
    for weighting in ("gaussian", "learned") if control is not None else ():
        for metric in METRICS:
            rec = {"Weights": f"{CONTROL_ROW}, {WEIGHTING_TITLE[weighting].lower()}",
                   "Metric": metric}  # fmt: skip
            for signal in SIGNALS:
                src = next(t for t, v in TABLES.items() if v == ("seg", weighting, signal))
                rec[SIGNAL_TITLE[signal]] = _best_fused(control[control["source"] == src])[metric]
            rows.append(rec)
    prior = other[other["source"] == PRIOR_SOURCE]
    if len(prior):
        means = prior[list(METRICS)].mean()
        columns = [c for c in rows[0] if c not in ("Weights", "Metric")]
        rows.extend({"Weights": PRIOR_ROW, "Metric": metric, **dict.fromkeys(columns, means[metric])}
                    for metric in METRICS)  # fmt: skip
    t7 = pd.DataFrame(rows).set_index(["Weights", "Metric"]).round(2)
    return t7, other_protocol


def _table12(frames: Mapping[str, pd.DataFrame], paper_values: str | Path) -> pd.DataFrame:
    """Table 12: the cited methods' rows of ``paper_values`` and our best fused SEG run."""
    pv = pd.read_csv(paper_values)
    cited = pv[(pv["artifact"] == "table12") & (pv["kind"] == "cited")]
    t12 = cited.pivot_table(
        index="row", columns="column", values="value", aggfunc="first", sort=False
    )
    # DEVIATION: the paper's "Proposed Approach" row gives no selection rule -> the best of the 42
    # fused configurations (tables 1-6 x seven classifiers) by cross-validated AC, which is
    # optimistic: the choice is made on the same CV results that are reported.
    table, cand, clf = _best_fused_seg(frames)
    _, weighting, signal = TABLES[table]
    ours = pd.DataFrame(
        {"AUC": [cand["AUC"] / 100], "AC": [cand["AC"]], "SP": [cand["Spec"]], "SN": [cand["Sens"]],
         "Year": ["this run"], "Dataset": ["ISIC2017 train+test + archive melanomas"],
         "Best classifier": [clf],
         "Features": [f"fused SEG, {WEIGHTING_TITLE[weighting].lower()} weights, {signal}"]},
        index=pd.Index(["Proposed Approach"], name="Author"),
    )  # fmt: skip
    t12.index.name = "Author"
    t12 = pd.concat([t12, ours.round(4)])
    t12 = t12[[c for c in ("Year", "Dataset", "Features", "Best classifier", "AUC", "AC", "SP", "SN")
               if c in t12.columns]]  # fmt: skip
    return t12


def _best_fused_seg(frames: Mapping[str, pd.DataFrame]) -> tuple[str, pd.Series, str]:
    """``(table, mean metrics, classifier)`` of the fused run with the highest AC in tables 1-6."""
    best = None
    for table in ("table01", "table02", "table03", "table04", "table05", "table06"):
        m = frames[table]
        mean = m[m["feature_set"] == "fused"].groupby("classifier")[list(METRICS)].mean()
        cand = mean.sort_values("AC", ascending=False).iloc[0]
        if best is None or cand["AC"] > best[1]["AC"]:
            best = (table, cand, mean["AC"].idxmax())
    assert best is not None
    return best
