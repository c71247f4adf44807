"""Cross-validation of the sp_graphs paper: feature blocks -> each table's feature sets -> metrics.

One job per results table: :func:`cross_validate_table` loads every feature shard, builds the
table's feature sets (:func:`table_feature_sets`) and saves per-fold metrics and feature
selection counts (parquet) for :mod:`melrepro.papers.sp_graphs.tables` and ``figures``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melrepro.methods.classical import (
    CLASSIFIERS,
    ClassifierSettings,
    cross_validate,
    label_prior_metrics,
)
from melrepro.methods.conventional_features import conventional_feature_names
from melrepro.methods.graph_features import feature_names
from melrepro.papers.sp_graphs.features import load_features
from melrepro.papers.sp_graphs.variants import TABLES, variant_key

logger = logging.getLogger(__name__)

__all__ = ["CONTROL", "PRIOR_SOURCE", "cross_validate_table", "edge_density", "table_feature_sets"]

#: The label-shuffled control's CV "table": tables 1-6's fused sets on permuted training labels.
CONTROL = "label_shuffled"
#: ``source`` of the label prior's rows in table07's CV metrics (computed, not fitted).
PRIOR_SOURCE = "label_prior"


def _level_label(n: int | str) -> str:
    return "fused" if n == "fused" else f"n={n}"


def table_feature_sets(
    table: str,
    blocks: Mapping[str, np.ndarray],
    *,
    seg_levels: Sequence[int],
    shg_levels: Sequence[int],
    prune_taus: Sequence[float],
    include_conventional: bool = True,
    fused_only: bool = False,
) -> dict[str, tuple[np.ndarray, list[str]]]:
    """The feature sets of one results table, ``{row label: (X, names)}``.

    Every single-level set is that level's graph features plus (by default) the conventional
    features; the fused set concatenates the conventional features and every level (paper §5).
    ``table11`` gives the fused SEG learned-colour set at every pruning fraction (``tau=0%``...).
    """
    graph, weighting, signal = TABLES[table]
    levels = list(seg_levels if graph == "seg" else shg_levels)
    conv = [(blocks["conventional"], conventional_feature_names())] if include_conventional else []

    def level_block(n: int, tau: float) -> tuple[np.ndarray, list[str]]:
        key = variant_key(graph, weighting, signal, tau, n)
        return blocks[key], feature_names(n, prefix=f"n{n}:")

    def combine(parts: list[tuple[np.ndarray, list[str]]]) -> tuple[np.ndarray, list[str]]:
        return np.hstack([p[0] for p in parts]), [nm for p in parts for nm in p[1]]

    sets: dict[str, tuple[np.ndarray, list[str]]] = {}
    if table == "table11":
        for tau in [0.0, *prune_taus]:
            sets[f"tau={round(100 * tau)}%"] = combine(conv + [level_block(n, tau) for n in levels])
        return sets
    if not fused_only:
        for n in levels:
            sets[_level_label(n)] = combine([*conv, level_block(n, 0.0)])
    sets["fused"] = combine(conv + [level_block(n, 0.0) for n in levels])
    return sets


def edge_density(x: np.ndarray, names: Sequence[str]) -> float:
    """Mean edge density (%) of the graphs behind a feature set: its ``n<k>:D`` columns.

    The learned graphs' sparsity: the mean over images and levels of the density feature ``D``
    (edges with ``w > 0`` over ``n(n-1)/2``); ``nan`` for a set without graph features.
    """
    cols = [i for i, name in enumerate(names) if re.fullmatch(r"n\d+:D", name)]
    return float(100 * x[:, cols].mean()) if cols else float("nan")


def cross_validate_table(
    feature_files: Sequence[str | Path],
    manifests: Sequence[str | Path],
    metrics_out: str | Path,
    selection_out: str | Path,
    *,
    table: str,
    protocol: str,
    seg_levels: Sequence[int],
    shg_levels: Sequence[int],
    prune_taus: Sequence[float],
    n_splits: int = 10,
    include_conventional: bool = True,
    classifier_settings: Mapping[str, Any] | None = None,
    classifiers: Sequence[str] = CLASSIFIERS,
    seed: int = 0,
) -> None:
    """Run the CV of one table and save per-fold metrics and selection counts (parquet).

    ``table="table07"`` runs the fused sets of tables 1–6 under ``protocol`` (the workflow runs
    it with the protocol the other tables do not use, so table 7 can show both) and adds the
    label prior's metrics on the same folds (source ``label_prior``). ``table="label_shuffled"``
    (:data:`CONTROL`) runs the same fused sets on permuted training labels: the control.
    """
    samples, blocks = load_features(feature_files, manifests)
    y = samples["target"].to_numpy()
    settings = ClassifierSettings(**(classifier_settings or {}))
    kw = {"seg_levels": seg_levels, "shg_levels": shg_levels, "prune_taus": prune_taus,
          "include_conventional": include_conventional}  # fmt: skip
    frames_m, frames_s = [], []
    fused_only = table in ("table07", CONTROL)
    sources = [f"table0{i}" for i in range(1, 7)] if fused_only else [table]
    for src in sources:
        sets = table_feature_sets(src, blocks, fused_only=fused_only, **kw)
        res = cross_validate(
            sets, y, classifiers=tuple(classifiers), protocol=protocol, n_splits=n_splits,
            settings=settings, seed=seed, shuffle_training_labels=table == CONTROL,
        )  # fmt: skip
        density = {label: edge_density(x, names) for label, (x, names) in sets.items()}
        frames_m.append(res.metrics.assign(source=src, protocol=protocol,
                                           edge_density=res.metrics["feature_set"].map(density)))  # fmt: skip
        frames_s.append(res.selection.assign(source=src, protocol=protocol))
    if table == "table07":
        prior = label_prior_metrics(y, n_splits=n_splits, seed=seed)
        frames_m.append(prior.assign(feature_set="none", source=PRIOR_SOURCE, protocol=protocol))
    for frames, out in ((frames_m, metrics_out), (frames_s, selection_out)):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        pd.concat(frames, ignore_index=True).to_parquet(out)
    logger.info("cv %s (%s): %d images, %d melanomas", table, protocol, len(y), int(y.sum()))
