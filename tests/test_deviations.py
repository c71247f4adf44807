"""docs/deviations.md is generated from the ``# DEVIATION:`` marks and every mark explains itself."""

from __future__ import annotations

from pathlib import Path

from melrepro.report import deviations

ROOT = Path(__file__).resolve().parents[1]


def test_docs_deviations_is_up_to_date_with_the_marks():
    regenerated = deviations.render(deviations.scan(ROOT))
    current = (ROOT / "docs" / "deviations.md").read_text(encoding="utf-8")
    assert current == regenerated, "run: python -m melrepro.report.deviations"


def test_every_mark_in_the_repository_has_an_explanation():
    empty = deviations.marks_without_explanation(deviations.scan(ROOT))
    assert not empty, [f"{m.path}:{m.line}" for m in empty]


def test_every_paper_has_at_least_one_row():
    papers = {m.paper for m in deviations.scan(ROOT)}
    assert set(deviations.PAPERS) <= papers


def _checkout(tmp_path: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


def test_checker_flags_a_mark_without_explanation(tmp_path):
    root = _checkout(
        tmp_path,
        {
            "src/melrepro/papers/siim2020/a.py": (
                "x = 1  # DEVIATION:\n"
                "# DEVIATION: too short\n"
                "# DEVIATION no colon at all here\n"
                "# DEVIATION: resize with bilinear (paper Lanczos), the cache is shared\n"
            ),
        },
    )
    marks = deviations.scan(root)
    assert [m.line for m in marks] == [1, 2, 3, 4]
    assert [m.line for m in deviations.marks_without_explanation(marks)] == [1, 2, 3]
    assert deviations.main(["--root", str(root)]) == 1
    (root / "src/melrepro/papers/siim2020/a.py").write_text(
        "# DEVIATION: resize with bilinear (paper Lanczos), the cache is shared\n"
    )
    assert deviations.main(["--root", str(root)]) == 0
    assert deviations.main(["--root", str(root), "--check"]) == 0
    (root / "docs/deviations.md").write_text("stale\n")
    assert deviations.main(["--root", str(root), "--check"]) == 1


def test_marks_are_attributed_by_path_config_section_and_method_users(tmp_path):
    root = _checkout(
        tmp_path,
        {
            "src/melrepro/methods/only_one.py": (
                "def f():\n"
                "    # DEVIATION: the paper says A -> we do B, because C\n"
                "    #   and this continuation line belongs to it\n"
                "    # READING: not part of the mark\n"
                "    return 1\n"
            ),
            "src/melrepro/methods/both.py": "# DEVIATION: shared departure of two papers here\nY = 2\n",
            "src/melrepro/papers/gcn_mil/x.py": "from melrepro.methods import only_one, both\n",
            "scripts/train_effnet_ham.py": "from melrepro.methods.both import Y\n",
            "config/config.yaml": (
                "data:\n"
                "  # DEVIATION: a data departure with enough words\n"
                "  n: 1\n"
                "gradcam_overlap:\n"
                "  train:\n"
                "    lr: 1  # DEVIATION: Adam 1e-3 instead of SGD 1e-5, random weights\n"
                "  # Some words first. DEVIATION: grids 4x4 instead of 28x28, for time\n"
                "  # on two cores\n"
                "  models:\n"
                "    vgg16: {grid: [4, 4]}\n"
            ),
        },
    )
    by_place = {(m.path, m.line): m for m in deviations.scan(root)}
    method = by_place[("src/melrepro/methods/only_one.py", 2)]
    assert (method.paper, method.where) == ("gcn_mil", "f()")
    assert (
        method.text
        == "the paper says A -> we do B, because C and this continuation line belongs to it"
    )
    assert by_place[("src/melrepro/methods/both.py", 1)].paper == "shared"
    assert by_place[("src/melrepro/methods/both.py", 1)].where == "Y"
    data = by_place[("config/config.yaml", 2)]
    assert (data.paper, data.where) == ("shared", "data.n")
    lr = by_place[("config/config.yaml", 6)]
    assert (lr.paper, lr.where) == ("gradcam_overlap", "gradcam_overlap.train.lr")
    grid = by_place[("config/config.yaml", 7)]
    assert (grid.where, grid.text) == (
        "gradcam_overlap.models",
        "grids 4x4 instead of 28x28, for time on two cores",
    )
    text = deviations.render(list(by_place.values()))
    gcn_table = text.split("## 000 gcn_mil")[1].split("## ")[0]
    assert "`src/melrepro/methods/only_one.py`" in gcn_table
    assert "No marks." in text.split("## 001 sp_graphs")[1].split("## ")[0]
