"""Seeds of the CNN papers (issue 20): n_seeds trainings per model, tables in mean +- SD, the
scorecard's interval over seeds; one seed leaves everything as it was."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats
from test_workflow import _copy_workflow, _jobs, snakemake

from melrepro.report.scorecard import score_paper
from melrepro.report.seeds import (
    SEED_STRIDE,
    aggregate_seeds,
    seeds_markdown,
    training_seed,
    write_seed_table,
)


def _t_interval(values) -> tuple[float, float]:
    """The Student-t 95 % interval of the mean, written out (not melrepro's helper)."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return values.mean() - half, values.mean() + half


def test_training_seed_keeps_the_global_seed_first():
    """Check seed index 0 is the global seed (one seed = the run without seeds), the rest distinct."""
    assert training_seed(2024, 0) == 2024
    seeds = [training_seed(2024, i) for i in range(5)]
    assert len(set(seeds)) == 5
    assert seeds[1] == 2024 + SEED_STRIDE
    with pytest.raises(ValueError, match="seed index -1"):
        training_seed(2024, -1)


def test_aggregate_seeds_means_sds_and_intervals():
    """Check two keys x three seeds fold into mean, SD and t-interval; other columns the first seed's."""
    auc = {"A": [0.70, 0.80, 0.75], "B": [0.60, 0.62, 0.70]}
    rows = [
        {"Model": m, "AUC": auc[m][s], "AUC CI low": 0.0, "AUC CI high": 1.0, "n": 10 + s}
        for s in range(3)
        for m in ("A", "B")
    ]
    table = aggregate_seeds(pd.DataFrame(rows).set_index("Model"), ["AUC"])
    assert table.index.tolist() == ["A", "B"]
    assert table.columns.tolist() == ["AUC", "AUC SD", "AUC CI low", "AUC CI high", "n", "Seeds"]
    for m, values in auc.items():
        assert table.loc[m, "AUC"] == pytest.approx(np.mean(values))
        assert table.loc[m, "AUC SD"] == pytest.approx(np.std(values, ddof=1))
        low, high = _t_interval(values)
        assert (table.loc[m, "AUC CI low"], table.loc[m, "AUC CI high"]) == pytest.approx(
            (low, high)
        )
    assert table["n"].tolist() == [10, 10]  # the first seed's
    assert table["Seeds"].tolist() == [3, 3]


def test_rows_computed_once_stand_beside_seeded_rows():
    """Check a reference row (one value) keeps its value with Seeds 1 and no SD; 2 vs 3 seeds fails."""
    rows = [{"Model": "A", "AUC": v} for v in (0.7, 0.8, 0.75)] + [{"Model": "prior", "AUC": 0.5}]
    table = aggregate_seeds(pd.DataFrame(rows).set_index("Model"), ["AUC"])
    assert table.loc["A", "AUC"] == pytest.approx(0.75)
    assert table.loc["prior", "AUC"] == 0.5
    assert np.isnan(table.loc["prior", "AUC SD"])
    assert table["Seeds"].tolist() == [3, 1]
    assert seeds_markdown(table, ["AUC"]).loc["prior", "AUC"] == "0.5"
    uneven = rows + [{"Model": "B", "AUC": v} for v in (0.6, 0.65)]
    with pytest.raises(ValueError, match="unequal numbers of seeds"):
        aggregate_seeds(pd.DataFrame(uneven).set_index("Model"), ["AUC"])


def test_one_seed_tables_are_written_unchanged(tmp_path):
    """Check a table without repeated keys keeps its bytes; one with them gets mean +- SD cells."""
    from melrepro.report.tables import write_table

    single = pd.DataFrame({"Model": ["A", "B"], "AUC": [0.7, 0.6]}).set_index("Model")
    write_table(single, tmp_path / "before.csv", title="T")
    write_seed_table(single, tmp_path / "after.csv", title="T", metric_columns=["AUC"])
    for suffix in (".csv", ".md"):
        before = (tmp_path / f"before{suffix}").read_text()
        assert (tmp_path / f"after{suffix}").read_text() == before

    double = pd.concat([single, single + 0.1])
    written = write_seed_table(double, tmp_path / "seeds.csv", title="T", metric_columns=["AUC"])
    markdown = (tmp_path / "seeds.md").read_text()
    assert "Mean ± SD over 2 seeds" in markdown
    assert "| A | 0.75 ± 0.071 |" in markdown
    csv = pd.read_csv(tmp_path / "seeds.csv")
    assert csv["AUC"].tolist() == pytest.approx([0.75, 0.65])  # numeric columns stay numbers
    assert csv["AUC SD"].tolist() == pytest.approx([0.1 / math.sqrt(2)] * 2)
    assert written["Seeds"].tolist() == [2, 2]
    with pytest.raises(ValueError, match="unequal numbers of seeds"):
        aggregate_seeds(pd.concat([single, single, single.iloc[:1]]), ["AUC"])


def _siim_metrics(tmp_path, seed: int, f1: float) -> str:
    info = {
        "label": "Base Small",
        "model": "base",
        "dataset": "small",
        "protocol": "patient",
        "threshold": 0.3 + seed / 10,
        "f1": f1,
        "auroc": 0.8 + seed / 100,
        "recall": 0.85,
        "threshold_rule": "f1",
        "n_eval": 100,
        "n_eval_melanomas": 10,
        "val_auroc": 0.7,
        "n_train": 50,
        "epochs_run": 3,
        "weights": "imagenet",
        "device": "cpu",
    }
    path = tmp_path / f"seed{seed}.json"
    path.write_text(json.dumps(info))
    return str(path)


def test_siim2020_table01_over_seeds(tmp_path):
    """Check siim2020 table01 folds three seeds of a training into one row of mean +- SD."""
    from melrepro.papers.siim2020.tables import tabulate_table01

    f1 = [0.40, 0.50, 0.45]
    paths = [_siim_metrics(tmp_path, s, v) for s, v in enumerate(f1)]
    table = tabulate_table01(paths, tmp_path / "table01.csv")
    row = pd.read_csv(tmp_path / "table01.csv").set_index("Model").loc["Base Small"]
    # the seeds fold into one row; the computed label prior stands beside it, once
    assert table["Seeds"].to_dict() == {"Base Small": 3, "Label prior (trivial baseline)": 1}
    assert row["F1-Score"] == pytest.approx(np.mean(f1))
    assert row["F1-Score SD"] == pytest.approx(np.std(f1, ddof=1))
    assert (row["F1-Score CI low"], row["F1-Score CI high"]) == pytest.approx(_t_interval(f1))
    assert row["ROC-AUC"] == pytest.approx(0.81)
    assert row["Seeds"] == 3
    assert "Mean ± SD over 3 seeds" in (tmp_path / "table01.md").read_text()


def test_gradcam_overlap_table00_over_seeds(tmp_path):
    """Check gradcam_overlap table00 reads the classifiers' seeds: per-class mean and SD."""
    from melrepro.papers.gradcam_overlap.evaluate import class_metrics
    from melrepro.papers.gradcam_overlap.tables import _table00

    rng = np.random.default_rng(0)
    labels = rng.choice(["MEL", "NV", "BCC"], size=60)
    paths = []
    for seed in range(2):
        predictions = np.where(rng.random(60) < 0.6 + 0.2 * seed, labels, "NV")
        path = tmp_path / f"predictions-{seed}.parquet"
        frame = pd.DataFrame({"split": "test", "label": labels, "prediction": predictions})
        frame.to_parquet(path)
        paths.append(path)
    table = _table00({"vgg16": paths[0]}, {"vgg16": "VGG16"}, ["vgg16"], {"vgg16": paths[1:]}, {})
    folded = aggregate_seeds(table, ["Sensitivity"])
    per_seed = [
        class_metrics(labels, pd.read_parquet(p)["prediction"]).set_index("Class") for p in paths
    ]
    mel = [s.loc["MEL", "Sensitivity"] for s in per_seed]
    assert folded.loc[("VGG16", "MEL"), "Sensitivity"] == pytest.approx(np.mean(mel))
    assert folded.loc[("VGG16", "MEL"), "Sensitivity SD"] == pytest.approx(np.std(mel, ddof=1))


def test_scorecard_names_the_interval_over_seeds(tmp_path):
    """Check a metric of a table over seeds is judged by the seeds' interval, and the row says so."""
    tables = tmp_path / "tables"
    tables.mkdir()
    auc = [0.80, 0.82, 0.81]
    rows = [{"Model": "A", "AUC": v} for v in auc] + [{"Model": "B", "AUC": 0.7}] * 3
    write_seed_table(
        pd.DataFrame(rows).set_index("Model"), tables / "t1.csv", title="T", metric_columns=["AUC"]
    )
    values = tmp_path / "p.csv"
    values.write_text("artifact,row,column,value,kind\nt1,A,AUC,0.81,own\n")
    margins = tmp_path / "margins.csv"
    margins.write_text("paper,artifact,row,column,family,margin\n,,,AUC,auc,0.02\n")
    card = score_paper(values, tables, data_source="isic", margins_path=margins)
    low, high = _t_interval(auc)
    assert (card.loc[0, "ci_low"], card.loc[0, "ci_high"]) == pytest.approx((low, high))
    assert card.loc[0, "verdict"] == "agrees"  # [0.785, 0.835] within 0.81 +- 0.0005 +- 0.02
    assert card.loc[0, "reason"].endswith("interval: Student-t of the mean over 3 seeds")
    # one seed: no Seeds column, the reason as before
    write_seed_table(
        pd.DataFrame(rows[:1]).set_index("Model"),
        tables / "t1.csv",
        title="T",
        metric_columns=["AUC"],
    )
    card = score_paper(values, tables, data_source="isic", margins_path=margins)
    assert card.loc[0, "reason"] == "no interval (a single run, or a table without one)"


def test_dry_run_real_config_plans_three_seeds_per_model(tmp_path):
    """Check the real config plans 3 trainings of every CNN model, Grad-CAM on the first seed only;
    the default plans one."""
    workdir = _copy_workflow(tmp_path)
    real = yaml.safe_load((workdir / "config/isic.yaml").read_text())
    result = snakemake("-n", "--quiet", "rules", "--configfile", "config/isic.yaml", cwd=workdir)
    jobs = _jobs(result.stdout + result.stderr)
    n_variants = len(real["effnet_ham"]["variants"])
    for rule, first in (
        ("train_siim2020", 12 + 4),
        ("train_effnet_ham", n_variants),
        ("train_gradcam_overlap", 2),
    ):
        assert jobs[rule] == first, rule
        assert jobs[f"{rule}_seed"] == 2 * first, rule
    assert jobs["compute_gradcam_overlap"] == 2 * 9  # the first seed's classifiers only
    default = _jobs(snakemake("-n", "--quiet", "rules", cwd=workdir).stdout)
    assert default["train_siim2020"] == 16 + 1  # the paper's 16 + the label-shuffled control
    assert not any(name.endswith("_seed") for name in default)


@pytest.mark.slow
def test_effnet_ham_two_seeds_on_the_twin(tmp_path):
    """Check two seeds of one effnet_ham variant on the twin: table01 is their mean +- SD, and
    the scorecard takes its interval from the seeds and says so."""
    workdir = _copy_workflow(tmp_path)
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    for paper in ("gcn_mil", "sp_graphs", "siim2020", "gradcam_overlap"):
        config[paper]["activate"] = False
    effnet = config["effnet_ham"]
    effnet["variants"] = {"baseline2": effnet["variants"]["baseline2"]}
    effnet["n_seeds"] = 2
    # short trainings, one thread each: the two seeds train side by side on 2 cores
    effnet["recipe"]["epochs"] = 2
    effnet["threads"] = 1
    effnet["loader_workers"] = 0
    effnet["n_bootstrap"] = 100
    (workdir / "config/seeds.yaml").write_text(yaml.safe_dump(config))
    targets = ["results/effnet_ham/tables/table01.csv", "results/scorecard/effnet_ham.csv"]
    snakemake(*targets, "--cores", "2", "--configfile", "config/seeds.yaml", cwd=workdir)

    models = workdir / "results/effnet_ham/models/baseline2"
    infos = [json.loads((models / p / "metrics.json").read_text()) for p in (".", "seed-1")]
    runs = [json.loads((models / p / "run_info.json").read_text()) for p in (".", "seed-1")]
    assert [r["seed"] for r in runs] == [config["seed"], config["seed"] + SEED_STRIDE]
    table = pd.read_csv(workdir / "results/effnet_ham/tables/table01.csv")
    row = table.set_index(["Model", "Protocol"]).loc[("Baseline 2", "Youden (validation)")]
    aurocs = [i["test"]["auroc"] for i in infos]
    assert aurocs[0] != aurocs[1]  # two trainings, not one twice
    assert row["AUROC"] == pytest.approx(np.mean(aurocs))
    assert row["AUROC SD"] == pytest.approx(np.std(aurocs, ddof=1))
    assert (row["AUROC CI low"], row["AUROC CI high"]) == pytest.approx(_t_interval(aurocs))
    assert row["Seeds"] == 2
    markdown = (workdir / "results/effnet_ham/tables/table01.md").read_text()
    assert f"{np.mean(aurocs):.4g} ± {np.std(aurocs, ddof=1):.2g}" in markdown
    card = pd.read_csv(workdir / "results/scorecard/effnet_ham.csv")
    baseline2 = card[card["row"].str.startswith("Baseline 2") & (card["quantity"] == "metric")]
    assert len(baseline2)
    assert baseline2["reason"].str.endswith("Student-t of the mean over 2 seeds").all()
    recall = baseline2[
        (baseline2["row"] == "Baseline 2 / 95% specificity (test)")
        & (baseline2["column"] == "Recall")
    ]
    recalls = [i["test_spec95"]["recall"] for i in infos]
    assert recall["reproduced_value"].iloc[0] == pytest.approx(np.mean(recalls))
    assert recall[["ci_low", "ci_high"]].iloc[0].tolist() == pytest.approx(
        _t_interval(recalls), nan_ok=True
    )
