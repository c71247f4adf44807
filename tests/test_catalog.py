"""The files the Snakemake workflow catalog and citation tools read (issue 22 "Catalog")."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
PAPERS = ("gcn_mil", "sp_graphs", "siim2020", "effnet_ham", "gradcam_overlap")


def test_license_file_matches_the_package_metadata():
    """Check LICENSE exists and names the licence pyproject.toml declares."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]["text"]
    assert (ROOT / "LICENSE").read_text().startswith(f"{declared} License")


def test_citation_cites_every_paper():
    """Check CITATION.cff parses, is CFF 1.2 software and has one reference per paper key."""
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert citation["type"] == "software"
    notes = [ref["notes"] for ref in citation["references"]]
    assert [next(p for p in PAPERS if f"key {p}" in n) for n in notes] == list(PAPERS)
    assert all(ref["title"] and ref["authors"] for ref in citation["references"])


def test_catalog_file_states_how_to_run():
    """Check the catalog file has the keys the catalog reads and names both configurations."""
    catalog = yaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())
    usage = catalog["usage"]
    assert {"mandatory-flags", "software-stack-deployment", "report"} <= set(usage)
    assert "config/isic.yaml" in usage["mandatory-flags"]["desc"]
    assert usage["software-stack-deployment"]["conda"] is True
