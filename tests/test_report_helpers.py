"""run_info.json records what produced an output; rule graphs parse and draw."""

import json

import pytest

from melrepro.report.rulegraph import draw_rulegraph, parse_rulegraph
from melrepro.report.runinfo import config_hash, write_run_info

DOT = """digraph snakemake_dag {
    graph[bgcolor=white, margin=0];
    0[label = "all", color = "0.1 0.6 0.85", style="rounded"];
    1[label = "ingest_dataset", color = "0.2 0.6 0.85", style="rounded"];
    2[label = "make_synthetic_isic2017", color = "0.3 0.6 0.85", style="rounded"];
    3[label = "train_gcn_mil", color = "0.4 0.6 0.85", style="rounded"];
    1 -> 0
    2 -> 1
    1 -> 3
    3 -> 0
}"""


def test_run_info_records_weights_device_seed_and_versions(tmp_path):
    """Check the fields DESIGN.md section 4 asks for are written."""
    path = write_run_info(
        tmp_path / "out",
        data_source="synthetic",
        config={"a": 1},
        seed=3,
        weights="random-init",
        device="cpu",
    )
    info = json.loads(path.read_text())
    assert info["data_source"] == "synthetic"
    assert info["weights"] == "random-init"
    assert info["device"] == "cpu"
    assert info["seed"] == 3
    assert info["config_hash"] == config_hash({"a": 1})
    assert info["packages"]["torch"].startswith("2.14.1")
    assert info["code_version"]


def test_config_hash_is_order_independent_and_sensitive():
    """Check the hash ignores key order but not values."""
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_parse_rulegraph_edges():
    """Check node labels become rule names and edges point from producer to consumer."""
    graph = parse_rulegraph(DOT)
    assert set(graph) == {"all", "ingest_dataset", "make_synthetic_isic2017", "train_gcn_mil"}
    assert graph.has_edge("make_synthetic_isic2017", "ingest_dataset")
    assert graph.has_edge("ingest_dataset", "train_gcn_mil")


def test_draw_rulegraph_writes_png_and_pdf(tmp_path):
    """Check the figure files are written and the `all` node is left out."""
    graph = parse_rulegraph(DOT)
    path = draw_rulegraph(graph, tmp_path / "fig01.png", title="t")
    assert path.stat().st_size > 1000
    assert path.with_suffix(".pdf").exists()
    assert "all" in graph  # the caller's graph is not modified


@pytest.mark.parametrize("bad", ["", "digraph {}"])
def test_empty_rulegraph(bad):
    """Check an empty graph parses to no nodes."""
    assert len(parse_rulegraph(bad)) == 0
