"""The package shows the flow: data -> methods -> papers -> report, imports pointing down."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "melrepro"
SUBPACKAGES = ("data", "methods", "papers", "report")
# What each subpackage may import from the others (README "Layout", each __init__ docstring).
ALLOWED = {
    "data": set(),
    "methods": set(),
    "report": {"data"},
    "papers": {"data", "methods", "report"},
}


def melrepro_imports(path: Path) -> set[str]:
    """Every ``melrepro.<x>`` module a file imports, at any depth (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "melrepro"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "melrepro":
                found |= {f"melrepro.{a.name}" for a in node.names}
            elif node.module.startswith("melrepro."):
                found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: use absolute imports (line {node.lineno})")
    return found


def arrows() -> list[tuple[str, str, str]]:
    """(file, its subpackage, imported subpackage) for every cross-subpackage import."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if len(rel.parts) == 1:
            continue  # melrepro/__init__.py
        own = rel.parts[0]
        for module in melrepro_imports(path):
            parts = module.split(".")
            target = parts[1] if len(parts) > 1 else ""
            if target in SUBPACKAGES and target != own:
                out.append((str(rel), own, target))
    return out


def test_every_module_lives_in_a_subpackage():
    """Check no method module sits at the top of the package any more."""
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert top == []
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(
        SUBPACKAGES
    )


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_subpackage_docstring_says_what_it_may_use(subpackage):
    """Check each subpackage's __init__ says what lives there and what it may import."""
    doc = ast.get_docstring(ast.parse((PACKAGE / subpackage / "__init__.py").read_text()))
    assert doc is not None
    assert "May use" in doc


def test_imports_point_down():
    """Check every import across subpackages follows the allowed arrows."""
    found = arrows()
    # The check sees the arrows that exist (a broken parser would find none and pass).
    assert {(own, target) for _, own, target in found} >= {("papers", "methods")}
    wrong = [f"{f}: {own} -> {target}" for f, own, target in found if target not in ALLOWED[own]]
    assert wrong == []


def test_import_checker_catches_a_wrong_arrow(tmp_path):
    """Check the parser sees lazy and ``from melrepro import`` imports (the test can fail)."""
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from melrepro.papers import gcn_mil\n\nfrom melrepro import data\n"
    )
    assert melrepro_imports(module) == {"melrepro.papers", "melrepro.data"}


def test_scripts_link_points_at_the_package():
    """Check scripts/melrepro still resolves to src/melrepro (rule scripts import through it)."""
    link = Path(__file__).parents[1] / "scripts" / "melrepro"
    assert link.is_symlink()
    assert link.resolve() == PACKAGE.resolve()
