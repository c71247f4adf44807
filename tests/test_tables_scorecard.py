"""Tables round-trip to CSV/Markdown; the scorecard finds reproduced values by row key and column."""

import pandas as pd
import pytest

from melrepro.report.scorecard import lookup, read_paper_values, score_paper, summarize
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
    assert "| p | 2 | 1 | 0.05 | 5.6% |" in summarize({"p": card})


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
