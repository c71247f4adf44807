"""siim2020's tables: table01 (every training at its threshold) and table02 (dataset counts)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from melrepro.papers.siim2020.names import (
    DATASET_LABELS,
    DATASETS,
    MODEL_LABELS,
    PROTOCOL_SUFFIX,
    PROTOCOLS,
)

__all__ = ["SEED_METRICS", "tabulate_table01", "tabulate_table02"]

#: table01's columns that vary between seeds: mean +- SD when a paper trains several seeds.
SEED_METRICS = ("Threshold", "F1-Score", "ROC-AUC", "Recall", "Validation ROC-AUC")


def _evaluation_cells(result: Mapping[str, Any]) -> dict[str, Any]:
    """table01's cells of one evaluated model or reference row, from its metrics mapping."""
    return {
        "Model": result["label"],
        "Threshold": round(result["threshold"], 4),
        "F1-Score": round(result["f1"], 4),
        "ROC-AUC": round(result["auroc"], 4),
        "Recall": round(result["recall"], 4),
        "Threshold rule": result["threshold_rule"],
        "Protocol": result["protocol"],
        "Evaluation images": result["n_eval"],
        "Evaluation melanomas": result["n_eval_melanomas"],
        "Evaluation prevalence %": round(
            100 * result["n_eval_melanomas"] / max(result["n_eval"], 1), 2
        ),
    }


def _reference_rows(
    infos: Sequence[Mapping[str, Any]], references: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The label prior of each protocol's evaluation set, then ``references`` (computed rows,
    e.g. :func:`~melrepro.papers.siim2020.baselines.metadata_logistic_row`)."""
    from melrepro.papers.siim2020.baselines import label_prior_row

    first = {}
    for i in infos:
        first.setdefault(i["protocol"], i)
    rows = []
    for ref in [*(label_prior_row(i) for i in first.values()), *references]:
        rows.append(
            {
                **_evaluation_cells(ref),
                "Training images": ref.get("n_train"),
                "Weights": "none (computed)",
            }
        )
    return rows


def tabulate_table01(
    metrics_paths: Sequence[str | Path],
    output: str | Path,
    *,
    references: Sequence[Mapping[str, Any]] = (),
    run_info: Mapping | None = None,
) -> pd.DataFrame:
    """table01: threshold, F1, ROC-AUC and recall of every training (base rows first; the
    label-shuffled control after the models of its protocol), then the reference rows: the label
    prior of each protocol and ``references``."""
    from melrepro.report.seeds import write_seed_table

    infos = [json.loads(Path(p).read_text(encoding="utf-8")) for p in metrics_paths]
    order = {
        (m, d, p): k
        for k, (p, m, d) in enumerate(
            (p, m, d) for p in PROTOCOLS for m in MODEL_LABELS for d in DATASETS
        )
    }
    infos.sort(key=lambda i: order[(i["model"], i["dataset"], i["protocol"])])
    rows = []
    for i in infos:
        rows.append(
            {
                **_evaluation_cells(i),
                "Validation ROC-AUC": round(i["val_auroc"], 4),
                "Training images": i["n_train"],
                "Epochs": i["epochs_run"],
                "Weights": i["weights"],
            }
        )
    rows += _reference_rows(infos, references)
    table = pd.DataFrame(rows).set_index("Model")
    # one row per training and seed; write_seed_table folds the seeds into mean and SD
    table = write_seed_table(
        table,
        output,
        title="Table 1. Base (and expert, author-protocol) models at the F1-optimal threshold "
        "with TPR in [0.8, 0.9] on the evaluation set; the label-shuffled control and the "
        "computed reference rows (label prior, logistic regression on age, sex and mean colour) "
        "are no rows of the paper",
        metric_columns=SEED_METRICS,
    )
    if run_info is not None:
        from melrepro.report.runinfo import write_run_info

        write_run_info(
            Path(output).parent,
            data_source=run_info["data_source"],
            config={"trainings": list(dict.fromkeys(i["label"] for i in infos))},
            seed=run_info.get("seed"),
            weights=sorted({i["weights"] for i in infos}),
            device=sorted({i["device"] for i in infos}),
        )
    return table


def _table02_row(
    label: str, images=None, melanomas=None, patients=None, value=None, **extra
) -> dict[str, Any]:
    """One table02 row; ``Melanoma %`` where images and melanomas are both given."""
    share = None
    if images:
        share = round(100 * melanomas / images, 2) if melanomas is not None else None
    return {
        "Row": label,
        "Images": images,
        "Melanomas": melanomas,
        "Patients": patients,
        "Melanoma %": share,
        "Value": value,
        **extra,
    }


def _table02_cleaning_rows(c: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of the cleaning (one protocol's counts; the same for both)."""
    add = _table02_row
    return [
        add(
            "Original training",
            c["original_images"],
            c["original_melanomas"],
            c["original_patients"],
            **{
                "Male %": round(100 * c["original_male_share"], 2),
                "Mean age": round(c["original_mean_age"], 2),
                "Max images per patient": c["original_max_images_per_patient"],
            },
        ),
        add("Test", c["test_images"], value=c["test_rows_with_missing_metadata"]),
        add("Duplicates removed", c["duplicates_removed"], c["duplicate_melanomas_removed"]),
        add("Missing values removed", c["missing_removed"], c["missing_melanomas_removed"]),
        add(
            "Cleaned training",
            c["cleaned_images"],
            c["cleaned_melanomas"],
            c["cleaned_patients"],
            **{"Max images per patient": c["cleaned_max_images_per_patient"]},
        ),
        add("Female palms/soles", melanomas=c["female_palms_soles_melanomas"]),
        add("Male oral/genital", melanomas=c["male_oral_genital_melanomas"]),
    ]


def _table02_dataset_rows(c: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of one protocol's datasets, evaluation sets and brightness threshold."""
    add = _table02_row
    rows = []
    sfx = PROTOCOL_SUFFIX[c["protocol"]]
    d = c["datasets"]
    for name in DATASETS:
        label = DATASET_LABELS[name]
        rows.append(
            add(
                f"{label} train{sfx}",
                d[name]["train_images"],
                d[name]["train_melanomas"],
                d[name]["train_patients"],
            )
        )
        if name in ("all", "small"):
            rows.append(
                add(
                    f"{label} validation{sfx}",
                    d[name]["val_images"],
                    d[name]["val_melanomas"],
                    d[name]["val_patients"],
                )
            )
    e = c["evaluation"]
    rows.append(
        add(
            f"Evaluation set{sfx}",
            e["eval_images"],
            e["eval_melanomas"],
            e["eval_patients"],
            value=e["leakage_rows_removed"],
        )
    )
    for name in DATASETS:
        rows.append(
            add(
                f"Evaluation patients with {DATASET_LABELS[name]} training images{sfx}",
                d[name]["overlap_images"],
                d[name]["overlap_melanomas"],
                d[name]["overlap_patients"],
                value=d[name]["leakage_rows_removed"],
            )
        )
    rows.append(
        add(
            f"Brightness threshold{sfx}",
            melanomas=c["brightness_melanomas"],
            value=round(c["brightness_threshold"], 3),
        )
    )
    return rows


def tabulate_table02(counts_paths: Sequence[str | Path], output: str | Path) -> pd.DataFrame:
    """table02: every count of the dataset construction, for each protocol."""
    from melrepro.report.tables import write_table

    rows = []
    for path in counts_paths:
        c = json.loads(Path(path).read_text(encoding="utf-8"))
        if c["protocol"] == "patient":
            rows.extend(_table02_cleaning_rows(c))
        rows.extend(_table02_dataset_rows(c))
    table = pd.DataFrame(rows).set_index("Row")
    write_table(
        table,
        output,
        title="Table 2. Dataset construction (one evaluation set for the four datasets; "
        "Value: test rows with missing metadata; rows removed from the evaluation set, in all or "
        "as training rows of a dataset; brightness threshold 0-255). 'Evaluation patients with "
        "... training images': evaluation images, melanomas and patients of the evaluation "
        "patients who have other images in that training set",
    )
    return table
