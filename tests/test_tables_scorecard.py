"""Tables round-trip to CSV/Markdown; the scorecard finds reproduced values by row key and column."""

import pandas as pd
import pytest

from melrepro.report.scorecard import (
    VERDICTS,
    classify,
    lookup,
    margin_of,
    plot_scorecard,
    read_margin_rules,
    read_paper_values,
    read_quantity_rules,
    score_paper,
    summarize,
    verdict,
)
from melrepro.report.tables import mean_interval, row_keys, write_table


def _table():
    index = pd.MultiIndex.from_product([["20", "fused"], ["AC", "AUC"]], names=["level", "metric"])
    return pd.DataFrame({"SVM": [0.8, 0.85, 0.9, 0.95], "RF": [0.7, 0.75, 0.8, 0.97]}, index=index)


def test_write_table_writes_csv_and_markdown(tmp_path):
    """Check the CSV keeps index levels as columns and the Markdown has a header and every row."""
    path = write_table(_table(), tmp_path / "tables" / "table01.csv", title="t")
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["level", "metric", "SVM", "RF"]
    markdown = path.with_suffix(".md").read_text().splitlines()
    assert markdown[0] == "# t"
    assert markdown[2].startswith("| level | metric | SVM | RF |")
    assert len([line for line in markdown if line.startswith("| ")]) == 5
    assert not list(tmp_path.glob("tables/*.tmp"))


def test_row_keys_join_index_levels():
    """Check row keys are the index values joined by ' / '."""
    assert row_keys(_table())[2] == "fused / AC"


def test_score_paper_compares_own_values(tmp_path):
    """Check own rows get the reproduced value and difference; cited rows are not scored."""
    write_table(_table(), tmp_path / "table01.csv")
    values = tmp_path / "values.csv"
    values.write_text(
        "artifact,row,column,value,kind\n"
        "table01,fused / AUC,SVM,0.9,own\n"
        "table01,fused / AUC,KNN,0.5,own\n"
        "table12,Smith et al.,AUC,0.7,cited\n"
    )
    card = score_paper(values, tmp_path, data_source="synthetic")
    assert len(card) == 2
    assert card.loc[0, "reproduced_value"] == pytest.approx(0.95)
    assert card.loc[0, "difference"] == pytest.approx(0.05)
    assert pd.isna(card.loc[1, "reproduced_value"])
    # Synthetic data: a value is found but no metric verdict is given.
    assert card["verdict"].tolist() == ["not judged", "missing"]
    # reported, found, agree, inconclusive, differ, missing, by construction, not judged
    assert "| p | metric | 2 | 1 | 0 | 0 | 0 | 1 | 0 | 1 | 0.05 | 5.6% |" in summarize({"p": card})


def test_lookup_single_index_column():
    """Check a table with one index column is matched on its first column."""
    frame = pd.DataFrame({"model": ["a", "b"], "AUC": [0.1, 0.2]})
    assert lookup(frame, "b", "AUC") == pytest.approx(0.2)
    assert lookup(frame, "c", "AUC") is None
    assert lookup(frame, "a", "F1") is None


def test_paper_values_kind_is_checked(tmp_path):
    """Check a bad kind names the file, row and column."""
    path = tmp_path / "v.csv"
    path.write_text("artifact,row,column,value,kind\nt,r,c,1,mine\n")
    with pytest.raises(ValueError, match=r"row 1 \(line 2\), column 'kind'"):
        read_paper_values(path)


def test_verdicts_known_answers():
    """Check each verdict on built numbers: interval inside, wider than, outside the margin."""
    metric = {"precision": 0.0005, "margin": 0.02, "real_data": True}
    # agrees: the whole interval [0.90, 0.92] lies within 0.909 +- 0.0005 +- 0.02
    assert verdict("metric", 0.909, 0.91, interval=(0.90, 0.92), **metric)[0] == "agrees"
    # inconclusive: the interval holds the paper's value but is wider than the margin
    # (effnet_ham's 34 test images give intervals 0.17-0.90 wide)
    assert verdict("metric", 0.909, 0.91, interval=(0.70, 0.99), **metric)[0] == "inconclusive"
    # differs: the interval excludes the paper's value
    assert verdict("metric", 0.909, 0.80, interval=(0.75, 0.85), **metric)[0] == "differs"
    # differs even when the point estimate rounds to the paper's value, if the interval misses it
    assert verdict("metric", 0.909, 0.9094, interval=(0.91, 0.93), **metric)[0] == "differs"
    # no interval: inconclusive, never differs (however far the point estimate)
    judged, reason = verdict("metric", 0.909, 0.5, interval=(None, None), **metric)
    assert (judged, reason.startswith("no interval")) == ("inconclusive", True)
    # no margin configured: inconclusive
    no_margin = {**metric, "margin": None}
    assert verdict("metric", 0.9, 0.9, interval=(0.89, 0.91), **no_margin)[0] == "inconclusive"
    # synthetic data: no metric verdict, however close
    synthetic = {**metric, "real_data": False}
    assert verdict("metric", 0.909, 0.909, interval=(0.9, 0.92), **synthetic)[0] == "not judged"
    # by construction: never counted as agreement, even when equal
    fixed = verdict("metric", 0.0, 0.0, interval=(0.0, 0.0), by_construction="J(1.0) = 0", **metric)
    assert fixed == ("by construction", "J(1.0) = 0")
    # approximate paper value ("around 55 %", precision 5): 58 agrees, 61 with [60, 62] differs
    approx = {"precision": 5.0, "margin": 0.0, "real_data": True}
    assert verdict("count", 55, 58.0, **approx)[0] == "agrees"
    assert verdict("count", 55, 58.0, precision=0.5, real_data=True)[0] == "differs"
    assert verdict("metric", 55, 61.0, interval=(60.5, 62), **approx)[0] == "differs"
    assert verdict("metric", 55, 57.0, interval=(52, 59), **approx)[0] == "agrees"
    # counts: only on real data, exact for an integer; settings on any data
    assert verdict("count", 374, 374.0, precision=0.5)[0] == "not judged"
    assert verdict("count", 374, 374.0, precision=0.5, real_data=True)[0] == "agrees"
    assert verdict("count", 374, 375.0, precision=0.5, real_data=True)[0] == "differs"
    assert verdict("setting", 18, 18.0, precision=0.5)[0] == "agrees"
    assert verdict("setting", 18, 90.0, precision=0.5)[0] == "differs"
    # missing comes first
    assert verdict("metric", 0.9, None, precision=0.05, by_construction="x")[0] == "missing"
    assert verdict("metric", 0.9, float("nan"), precision=0.05)[0] == "missing"


def test_margin_rules_first_match_and_checks(tmp_path):
    """Check a metric gets the family and margin of the first matching rule; bad margins fail."""
    path = tmp_path / "margins.csv"
    path.write_text(
        "paper,artifact,row,column,family,margin\n"
        "p,.*,.* / AUC,.*,AUC (percent),2\n"
        ".*,.*,.*,p-value,test,\n"
        ".*,.*,.*,.*,rate,0.03\n"
    )
    rules = read_margin_rules(path)
    assert margin_of(rules, "p", "t1", "n=20 / AUC", "SVM") == ("AUC (percent)", 2.0)
    assert margin_of(rules, "q", "t1", "n=20 / AUC", "SVM") == ("rate", 0.03)
    assert margin_of(rules, "q", "t6", "x", "p-value") == ("test", None)
    path.write_text("paper,artifact,row,column,family,margin\n.*,.*,.*,.*,rate,-1\n")
    with pytest.raises(ValueError, match=r"row 1 \(line 2\), column 'margin'"):
        read_margin_rules(path)


def test_mean_interval_of_runs():
    """Check the t-interval of a mean over runs (by hand) and no interval below two runs."""
    low, high = mean_interval([0.8, 0.9, 1.0])
    # mean 0.9, SD 0.1, t(0.975, 2) = 4.3027: 0.9 +- 4.3027 * 0.1 / sqrt(3)
    assert (low, high) == pytest.approx((0.9 - 0.24842, 0.9 + 0.24842), abs=1e-4)
    assert all(map(pd.isna, mean_interval([0.8])))
    assert all(map(pd.isna, mean_interval([0.8, float("nan")])))


def test_quantities_from_columns_rules_and_inference(tmp_path):
    """Check explicit columns win, then the first matching rule, then the value's form."""
    rules_path = tmp_path / "quantities.csv"
    rules_path.write_text(
        "paper,artifact,row,column,quantity,protocol\n"
        "p,t1,Rotation.*,.*,setting,Table 1\n"
        "p,t1,.*,.*,count,train set\n"
    )
    rules = read_quantity_rules(rules_path)
    values = pd.DataFrame(
        {
            "artifact": ["t1", "t1", "t2", "t2", "t2"],
            "row": ["Rotation step", "Train", "a", "b", "c"],
            "column": ["x"] * 5,
            "value": ["18", "374", "0.91", "120", "98.0"],
            "kind": ["own"] * 5,
        }
    )
    out = classify(values, "p", rules)
    assert out["quantity"].tolist() == ["setting", "count", "metric", "count", "metric"]
    assert out["protocol"].tolist()[:2] == ["Table 1", "train set"]
    assert classify(values, "other", rules)["quantity"].tolist()[:2] == ["count", "count"]
    explicit = values.assign(quantity=["metric", None, None, None, None])
    assert classify(explicit, "p", rules)["quantity"].iloc[0] == "metric"
    bad = tmp_path / "bad.csv"
    bad.write_text("paper,artifact,row,column,quantity,protocol\np,t1,(,.*,count,x\n")
    with pytest.raises(ValueError, match=r"row 1 \(line 2\), column 'row'"):
        read_quantity_rules(bad)


def test_interval_columns_precision_and_margin_in_score_paper(tmp_path):
    """Check a table's '<column> CI low/high', the printed digits, 'precision' and margins."""
    table = pd.DataFrame(
        {
            "Model": ["B2", "B3"],
            "AUROC": [0.91, 0.80],
            "AUROC CI low": [0.90, 0.60],
            "AUROC CI high": [0.92, 0.99],
            "Male %": [58.0, 58.0],
        }
    ).set_index("Model")
    write_table(table, tmp_path / "table01.csv")
    values = tmp_path / "values.csv"
    values.write_text(
        "artifact,row,column,value,kind,precision,by_construction\n"
        "table01,B2,AUROC,0.909,own,,\n"
        "table01,B3,AUROC,0.8,own,,\n"
        "table01,B2,Male %,55,own,5,\n"
        "table01,B3,Male %,55,own,,\n"
        "table01,B2,AUROC,0.91,own,,the threshold fixes it\n"
    )
    margins = tmp_path / "margins.csv"
    margins.write_text("paper,artifact,row,column,family,margin\n.*,.*,.*,AUROC,AUC,0.02\n")
    quantities = tmp_path / "quantities.csv"
    quantities.write_text(
        "paper,artifact,row,column,quantity,protocol\n.*,.*,.*,Male %,count,meta\n"
    )
    card = score_paper(
        values,
        tmp_path,
        data_source="isic",
        margins_path=margins,
        quantities_path=quantities,
        paper="p",
    )
    assert card["precision"].tolist() == pytest.approx([0.0005, 0.05, 5, 0.5, 0.005])
    assert card["ci_low"].iloc[0] == pytest.approx(0.90)
    assert card["margin"].iloc[0] == pytest.approx(0.02)
    assert card["family"].iloc[0] == "AUC"
    assert card["verdict"].tolist() == [
        "agrees",
        "inconclusive",
        "agrees",
        "differs",
        "by construction",
    ]
    assert card["protocol"].iloc[2] == "meta"
    plot_scorecard(card, tmp_path / "card.png", paper="p")
    assert (tmp_path / "card.png").stat().st_size > 1000
    summary = summarize({"p": card})
    assert "| p | metric | 3 | 3 | 1 | 1 | 0 | 0 | 1 | 0 |" in summary
    assert "| p | count | 2 | 2 | 1 | 0 | 1 | 0 | 0 | 0 |" in summary
    assert "| p | all | 5 | 5 | 2 | 1 | 1 | 0 | 1 | 0 |" in summary


def test_summary_keeps_counts_apart_from_metrics():
    """Check a count's large difference does not enter the metrics' median."""
    card = pd.DataFrame(
        {
            "paper_value": [374.0, 0.9],
            "reproduced_value": [20.0, 0.8],
            "difference": [-354.0, -0.1],
            "data_source": ["synthetic"] * 2,
            "quantity": ["count", "metric"],
            "protocol": ["train set", "test set"],
            "verdict": ["not judged", "differs"],
        }
    )
    text = summarize({"gcn_mil": card})
    assert "| gcn_mil | count | 1 | 1 | 0 | 0 | 0 | 0 | 0 | 1 | 354 |" in text
    assert "| gcn_mil | metric | 1 | 1 | 0 | 0 | 1 | 0 | 0 | 0 | 0.1 |" in text
    assert len(VERDICTS) == 6


def test_repository_paper_values_get_a_quantity_each():
    """Check every scored number of the repository's paper values gets a quantity, every metric
    a margin rule, and the tags the issue asked for are there."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "config" / "paper_values"
    rules = read_quantity_rules(root / "quantities.csv")
    margins = read_margin_rules(root / "margins.csv")
    for path in sorted(root.glob("*.csv")):
        if path.name in ("quantities.csv", "margins.csv"):
            continue
        values = read_paper_values(path)
        own = classify(values[values["kind"] == "own"], path.stem, rules)
        assert own["quantity"].isin(["count", "setting", "metric"]).all(), path.name
        for record in own[own["quantity"] == "metric"].itertuples():
            family, _ = margin_of(margins, path.stem, record.artifact, record.row, record.column)
            assert family is not None, (path.name, record.row, record.column)
        # each paper number is scored once
        assert not own.duplicated(["artifact", "row", "column"]).any(), path.name
    gcn = classify(read_paper_values(root / "gcn_mil.csv"), "gcn_mil", rules)
    assert set(gcn.loc[gcn["row"] == "Rotation step (deg)", "quantity"]) == {"setting"}
    effnet = classify(read_paper_values(root / "effnet_ham.csv"), "effnet_ham", rules)
    baseline1 = effnet["row"].str.startswith("Baseline 1 /")
    assert effnet.loc[baseline1, "protocol"].str.contains("milestone 1").all()
    assert effnet.loc[~baseline1, "protocol"].str.contains("95 % specificity").all()
    assert margin_of(margins, "effnet_ham", "table01", "x", "AUROC")[0] == "AUC"
    siim = read_paper_values(root / "siim2020.csv")
    siim = classify(siim[siim["kind"] == "own"], "siim2020", rules)
    author = siim["row"].str.contains(r"\[author code\]")
    assert siim.loc[author, "protocol"].str.startswith("the authors' code").all()
    assert not siim.loc[~author, "protocol"].str.contains("authors' code").any()
    approximate = siim.set_index("column").loc[["Male %", "Mean age"], "precision"]
    assert pd.to_numeric(approximate).tolist() == [5, 5]
    gradcam = read_paper_values(root / "gradcam_overlap.csv")
    fixed = gradcam[gradcam["by_construction"].notna()]
    assert set(fixed["column"]) == {"J-min", "Jaccard"}
    assert set(fixed.loc[fixed["column"] == "Jaccard", "row"]) == {"1.0"}
    sp = read_paper_values(root / "sp_graphs.csv")
    assert not sp["column"].str.contains(r"\[").any()  # table 7 against one protocol only
