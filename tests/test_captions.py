"""The report's captions: each artifact's says what the default run (the synthetic twin) can and
cannot show for it (issue 20), and every caption a rule names exists."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = ROOT / "workflow" / "report"
#: Captions of no table or figure: the report's front page and the list of departures.
NOT_ARTIFACTS = {"workflow.rst", "deviations.rst"}
ARTIFACT_CAPTIONS = sorted(p for p in CAPTIONS.glob("*.rst") if p.name not in NOT_ARTIFACTS)


def _default_run_paragraph(text: str) -> str:
    """The caption's paragraph that starts with **Default run.** (empty when there is none)."""
    for paragraph in re.split(r"\n\s*\n", text):
        if paragraph.lstrip().startswith("**Default run.**"):
            return " ".join(paragraph.split())
    return ""


def _renderings(caption: Path) -> dict[str, str]:
    """The caption as Snakemake's report shows it (Jinja2, as Snakemake renders captions): one
    text per value of the ``figure`` wildcard that a templated caption branches on."""
    import jinja2

    text = caption.read_text(encoding="utf-8")
    template = jinja2.Template(text)  # a stray brace pair fails here, as it would in the report
    figures = re.findall(r'snakemake\.wildcards\.figure == "(\w+)"', text) or [""]
    return {
        figure: template.render(snakemake=SimpleNamespace(wildcards=SimpleNamespace(figure=figure)))
        for figure in figures
    }


@pytest.mark.parametrize("caption", ARTIFACT_CAPTIONS, ids=lambda p: p.stem)
def test_caption_says_what_the_default_run_can_and_cannot_show(caption):
    """Check each artifact caption (each branch of a templated one) has a **Default run.**
    paragraph that states what the default run can show and what it cannot."""
    for figure, text in _renderings(caption).items():
        where = f"{caption.name} {figure}".strip()
        paragraph = _default_run_paragraph(text)
        assert paragraph, f"{where}: no paragraph starting with **Default run.**"
        assert "can show" in paragraph, where
        assert "cannot show" in paragraph, where


def test_every_caption_a_rule_names_exists():
    """Check every `caption=` of the rule files points at a caption file that exists."""
    named = set()
    for rules in (ROOT / "workflow" / "rules").glob("*.smk"):
        named |= set(re.findall(r'caption=f?"\.\./report/([^"{]+\.rst)"', rules.read_text()))
    assert named, "no caption= found in workflow/rules"
    missing = sorted(name for name in named if not (CAPTIONS / name).exists())
    assert not missing, missing
