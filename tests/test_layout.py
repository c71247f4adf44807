"""The package shows the flow: data -> methods -> papers -> report, imports pointing down."""

import ast
import re
from pathlib import Path

import pytest
from test_full_run import EXPECTED_ARTIFACTS

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


# ---------------------------------------------------------------- cycles and sizes

#: A module or function longer than these limits says why in its docstring, after this phrase.
LONG_REASON = "Why this long:"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
#: Where the limits hold (issue 18): the paper packages and the training core.
SIZE_CHECKED = ("papers", "methods/training")


def module_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the melrepro modules it imports, at any depth (lazy and TYPE_CHECKING ones too).

    ``from pkg import name`` points at the module ``pkg.name`` where that is a module, else at
    ``pkg`` itself (its ``__init__``): a submodule that imports names from its own package's
    ``__init__`` while that ``__init__`` imports the submodule is a cycle.
    """
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in files}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in files:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    graph[name].add(sub if sub in files else node.module)
    for name in graph:
        graph[name].discard(name)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (each one a cycle or more)."""
    import networkx as nx

    digraph = nx.DiGraph([(a, b) for a, targets in graph.items() for b in targets])
    return [sorted(c) for c in nx.strongly_connected_components(digraph) if len(c) > 1]


def test_no_import_cycle():
    """Check no two melrepro modules import each other, directly or through others."""
    graph = import_graph()
    assert sum(len(t) for t in graph.values()) > 50  # the graph sees the imports that exist
    assert import_cycles(graph) == []


def test_cycle_checker_finds_a_cycle(tmp_path):
    """Check the checker flags a TYPE_CHECKING-only circle and a package/submodule circle."""
    root = tmp_path / "melrepro"
    (root / "methods" / "core").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "methods" / "__init__.py").write_text("")
    (root / "methods" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from melrepro.methods.b import B\n"
    )
    (root / "methods" / "b.py").write_text("from melrepro.methods import a\n")
    (root / "methods" / "core" / "__init__.py").write_text(
        "from melrepro.methods.core.loop import run\n"
    )
    (root / "methods" / "core" / "loop.py").write_text(
        "def run():\n    from melrepro.methods.core import OPTIONS\n"
    )
    cycles = import_cycles(import_graph(root))
    assert sorted(cycles) == [
        ["melrepro.methods.a", "melrepro.methods.b"],
        ["melrepro.methods.core", "melrepro.methods.core.loop"],
    ]


def oversized(root: Path = PACKAGE) -> list[str]:
    """Modules over MAX_MODULE_LINES and functions over MAX_FUNCTION_LINES in SIZE_CHECKED,
    unless their docstring gives a reason after LONG_REASON."""
    found = []
    for where in SIZE_CHECKED:
        for path in sorted((root / where).rglob("*.py")):
            rel = path.relative_to(root)
            tree = ast.parse(path.read_text(), filename=str(path))
            n_lines = len(path.read_text().splitlines())
            if n_lines > MAX_MODULE_LINES and LONG_REASON not in (ast.get_docstring(tree) or ""):
                found.append(f"{rel}: {n_lines} lines")
            for node in ast.walk(tree):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and LONG_REASON not in (
                    ast.get_docstring(node) or ""
                ):
                    found.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    return found


def test_paper_and_training_modules_stay_readable():
    """Check papers/ and methods/training/ hold no module over 600 and no function over 80
    lines without a written reason (issue 18: a reader finds a paper's flow from the tree)."""
    assert (PACKAGE / "methods" / "training").is_dir()
    assert oversized() == []


def test_size_checker_sees_a_long_function(tmp_path):
    """Check the size checker flags a long function and accepts one that says why."""
    root = tmp_path / "melrepro"
    (root / "papers").mkdir(parents=True)
    (root / "methods" / "training").mkdir(parents=True)
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (root / "papers" / "long.py").write_text(
        f"def long():\n{body}\n\ndef reasoned():\n    '''{LONG_REASON} one recipe.'''\n{body}"
    )
    assert oversized(root) == ["papers/long.py:1 long: 81 lines"]


def indexed_ids(doc: str) -> set[str]:
    """Artifact ids a docstring names, ranges such as ``table01-table05`` or ``fig14–17``
    expanded."""
    ids = set(re.findall(r"\b(?:table|fig)\d{2}\b", doc))
    for kind, first, last in re.findall(
        r"\b(table|fig)(\d{2})\s*[-–]\s*(?:table|fig)?(\d{2})\b", doc
    ):
        ids |= {f"{kind}{k:02d}" for k in range(int(first), int(last) + 1)}
    return ids


def test_index_reader_expands_ranges():
    """Check ranges and single ids are both read (the index test can fail and can pass)."""
    assert indexed_ids("table01-table03 and fig05–06, fig09") == {
        "table01", "table02", "table03", "fig05", "fig06", "fig09"
    }  # fmt: skip


@pytest.mark.parametrize("paper", sorted(EXPECTED_ARTIFACTS))
def test_each_paper_is_a_package_with_an_artifact_index(paper):
    """Check papers/<key>/ is a package whose docstring indexes the paper's artifact ids."""
    init = PACKAGE / "papers" / paper / "__init__.py"
    assert init.is_file()
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    artifacts = EXPECTED_ARTIFACTS[paper]
    missing = [a for a in artifacts if a not in indexed_ids(doc)]
    assert artifacts
    assert missing == []
