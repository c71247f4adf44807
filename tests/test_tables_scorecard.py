"""Tables round-trip to CSV/Markdown; the scorecard finds reproduced values by row key and column."""

import pandas as pd
import pytest

from melrepro.report.scorecard import (
    classify,
    lookup,
    plot_scorecard,
    read_paper_values,
    read_quantity_rules,
    score_paper,
    summarize,
    verdict,
)
from melrepro.report.tables import row_keys, write_table


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
    # 0.95 against a paper's 0.9: within half a unit of its last digit.
    assert card["verdict"].tolist() == ["agrees", "missing"]
    assert "| p | metric | 2 | 1 | 1 | 0 | 0.05 | 5.6% |" in summarize({"p": card})


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
    """Check rounding, interval, counts only on real data, settings, missing."""
    assert verdict("metric", 0.909, 0.9094, tolerance=0.0005) == "agrees"
    assert verdict("metric", 0.909, 0.9096, tolerance=0.0005) == "differs"
    assert verdict("metric", 0.909, 0.80, tolerance=0.0005, interval=(0.7, 0.92)) == "agrees"
    assert verdict("metric", 0.909, 0.80, tolerance=0.0005, interval=(0.7, 0.9)) == "differs"
    assert verdict("count", 374, 374.0, tolerance=0.5) == "synthetic"
    assert verdict("count", 374, 374.0, tolerance=0.5, real_data=True) == "exact"
    assert verdict("count", 374, 375.0, tolerance=0.5, real_data=True) == "differs"
    assert verdict("setting", 18, 90.0, tolerance=0.5) == "differs"
    assert verdict("metric", 0.9, None, tolerance=0.05) == "missing"


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


def test_interval_columns_and_rounding_in_score_paper(tmp_path):
    """Check a table's '<column> CI low/high' are used and a paper value's digits set the tolerance."""
    table = pd.DataFrame(
        {"Model": ["B2"], "AUROC": [0.80], "AUROC CI low": [0.70], "AUROC CI high": [0.95]}
    ).set_index("Model")
    write_table(table, tmp_path / "table01.csv")
    values = tmp_path / "values.csv"
    values.write_text(
        "artifact,row,column,value,kind\ntable01,B2,AUROC,0.909,own\ntable01,B2,AUROC,0.8,own\n"
    )
    card = score_paper(values, tmp_path, data_source="isic")
    assert card["tolerance"].tolist() == pytest.approx([0.0005, 0.05])
    assert card["ci_low"].iloc[0] == pytest.approx(0.70)
    assert card["verdict"].tolist() == ["agrees", "agrees"]
    plot_scorecard(card, tmp_path / "card.png", paper="p")
    assert (tmp_path / "card.png").stat().st_size > 1000


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
            "verdict": ["synthetic", "differs"],
        }
    )
    text = summarize({"gcn_mil": card})
    assert "| gcn_mil | count | 1 | 1 | 0 | 0 | 354 |" in text
    assert "| gcn_mil | metric | 1 | 1 | 0 | 1 | 0.1 |" in text


def test_repository_paper_values_get_a_quantity_each():
    """Check every scored number of the repository's paper values gets a known quantity."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "config" / "paper_values"
    rules = read_quantity_rules(root / "quantities.csv")
    for path in sorted(root.glob("*.csv")):
        if path.name == "quantities.csv":
            continue
        values = read_paper_values(path)
        own = classify(values[values["kind"] == "own"], path.stem, rules)
        assert own["quantity"].isin(["count", "setting", "metric"]).all(), path.name
    gcn = classify(read_paper_values(root / "gcn_mil.csv"), "gcn_mil", rules)
    assert set(gcn.loc[gcn["row"] == "Rotation step (deg)", "quantity"]) == {"setting"}
    effnet = classify(read_paper_values(root / "effnet_ham.csv"), "effnet_ham", rules)
    baseline1 = effnet["row"].str.startswith("Baseline 1 /")
    assert effnet.loc[baseline1, "protocol"].str.contains("milestone 1").all()
    assert effnet.loc[~baseline1, "protocol"].str.contains("95 % specificity").all()
