"""docs/deviations.md: every ``# DEVIATION:`` mark of the code and config, one table per paper.

A departure from a paper is marked where it is decided, as a comment::

    # DEVIATION: <what the paper does> -> <what we do>, <why>

on one line or continued on the comment lines right below it (same indentation). A mark may
also follow other words of a comment (``# Runs averaged ... DEVIATION: 1 in the default``).
This module only reads files: it scans ``src/``, ``scripts/``, ``workflow/`` and ``config/``
for marks, attributes each to a paper and writes the Markdown.

Attribution, first match wins:

- an explanation that starts with a paper key and a colon (``# DEVIATION: gradcam_overlap: ...``),
  for a departure of one paper decided in shared code;
- ``src/melrepro/papers/<paper>/...``, ``scripts/*<paper>*``, ``workflow/rules/<paper>.smk``;
- a config file: the top-level section the key sits under (``gcn_mil:``, ``data:``, ...);
- a module of ``src/melrepro/methods/`` that the code of exactly one paper imports;
- otherwise ``shared``.

``python -m melrepro.report.deviations`` rewrites docs/deviations.md; ``--check`` exits 1 when
the file is out of date or a mark has no explanation (tests/test_deviations.py runs both).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PAPERS",
    "Mark",
    "attribute",
    "find_marks",
    "marks_without_explanation",
    "method_owners",
    "render",
    "scan",
]

#: The papers in the order of shared/papers (000-004), with the title used as table heading.
PAPERS = {
    "gcn_mil": "000 gcn_mil: GCN multiple-instance learning on image blocks",
    "sp_graphs": "001 sp_graphs: superpixel graphs with learned weights",
    "siim2020": "002 siim2020: SIIM-ISIC 2020, metadata and experts",
    "effnet_ham": "003 effnet_ham: EfficientNet on HAM10000",
    "gradcam_overlap": "004 gradcam_overlap: Grad-CAM vs dermoscopic features",
}
SHARED = "shared"

#: Folders scanned (relative to the repository root) and the file suffixes read in them.
SCAN_ROOTS = ("src", "scripts", "workflow", "config")
SUFFIXES = {".py", ".smk", ".yaml", ".yml"}
# Snakefile has no suffix.
EXTRA_FILES = ("Snakefile",)

#: An explanation needs at least this many words.
MIN_WORDS = 4

# A comment that contains the word DEVIATION (not DEVIATIONS): a mark, well formed or not.
_MARK = re.compile(r"#.*\bDEVIATION\b(?!S)")
_TEXT = re.compile(r"\bDEVIATION\b:(.*)$")
_KEY = re.compile(r"^(\s*)(?:-\s+)?([A-Za-z_][\w-]*)\s*:")
_OTHER_TAG = re.compile(r"\b(DEVIATION|READING)\b")


@dataclass(frozen=True)
class Mark:
    """One ``# DEVIATION:`` mark: where it is, what it says, which paper it belongs to."""

    path: str  # relative to the repository root, with forward slashes
    line: int  # 1-based line of the mark
    text: str  # the explanation (continuation lines joined), "" if none
    where: str  # config key (dotted) or code scope (function, class or module)
    paper: str  # a key of PAPERS or "shared"


def _comment_of(line: str) -> str | None:
    """The text after a line's ``#`` when the line is a comment only, else None."""
    stripped = line.lstrip()
    return stripped[1:].strip() if stripped.startswith("#") else None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def find_marks(lines: list[str]) -> list[tuple[int, str]]:
    """(1-based line, explanation) of each mark in a file's lines.

    The explanation is the text after ``DEVIATION:`` plus the comment-only lines right below
    the mark at the same indentation (until a blank comment or another DEVIATION/READING tag).
    A mark without ``DEVIATION:`` (no colon) has the explanation "".
    """
    marks = []
    for index, line in enumerate(lines):
        found = _MARK.search(line)
        if not found:
            continue
        text_match = _TEXT.search(line[found.start() :])
        if text_match is None:
            marks.append((index + 1, ""))
            continue
        parts = [text_match.group(1).strip()]
        if _comment_of(line) is not None:
            for following in lines[index + 1 :]:
                comment = _comment_of(following)
                if not comment or _indent(following) != _indent(line) or _OTHER_TAG.search(comment):
                    break
                parts.append(comment)
        marks.append((index + 1, " ".join(p for p in parts if p)))
    return marks


def marks_without_explanation(marks: list[Mark]) -> list[Mark]:
    """Marks whose explanation has fewer than :data:`MIN_WORDS` words."""
    return [m for m in marks if len(re.findall(r"\w+", m.text)) < MIN_WORDS]


def _config_where(lines: list[str], line_number: int) -> tuple[str | None, str]:
    """(top-level section, dotted key) for a mark in a YAML file.

    The key is the first key line at or below the mark (its line or the next non-comment line);
    its parents are the nearest key lines above it with less indentation.
    """
    index = line_number - 1
    key_index = None
    for j in range(index, len(lines)):
        if _comment_of(lines[j]) is None and _KEY.match(lines[j]):
            key_index = j
            break
        if lines[j].strip() and _comment_of(lines[j]) is None:
            break
    if key_index is None:
        # A trailing comment of a section: attribute it to the section above.
        key_index = next(
            (
                j
                for j in range(index, -1, -1)
                if _comment_of(lines[j]) is None and _KEY.match(lines[j])
            ),
            None,
        )
    if key_index is None:
        return None, "(file)"
    match = _KEY.match(lines[key_index])
    keys = [match.group(2)]
    level = len(match.group(1))
    for j in range(key_index - 1, -1, -1):
        if level == 0:
            break
        above = _KEY.match(lines[j])
        if above and _comment_of(lines[j]) is None and len(above.group(1)) < level:
            keys.insert(0, above.group(2))
            level = len(above.group(1))
    section = keys[0] if level == 0 else None
    return section, ".".join(keys)


def _code_scopes(source: str) -> list[tuple[int, int, str]]:
    """(first line, last line, qualified name) of every function (``name()``) and class of a file."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    scopes = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                # Classes are told apart by their name's missing "()".
                call = "" if isinstance(child, ast.ClassDef) else "()"
                scopes.append((first, child.end_lineno or child.lineno, name + call))
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return scopes


def _statement_name(lines: list[str], line_number: int) -> str | None:
    """The name a statement below the mark assigns or defines (``x =``, ``x: int``, ``def x``)."""
    for following in lines[line_number:]:
        if following.strip() and _comment_of(following) is None:
            name = re.match(
                r"\s*(?:async def |def |class )?([A-Za-z_]\w*)\s*(?:[:=(]|$)", following
            )
            keyword = name and name.group(1) in {
                "return",
                "if",
                "for",
                "while",
                "with",
                "else",
                "try",
            }
            return None if not name or keyword else name.group(1)
    return None


def _code_where(scopes: list[tuple[int, int, str]], lines: list[str], line_number: int) -> str:
    """The innermost function or class holding the mark (a class: with the field below it)."""
    inside = [s for s in scopes if s[0] <= line_number <= s[1]]
    below = _statement_name(lines, line_number)
    if not inside:
        return below or "module"
    name = max(inside, key=lambda s: s[0])[2]
    if name.endswith("()"):
        return name
    return f"{name}.{below}" if below else name


def _papers_named(text: str) -> set[str]:
    return {p for p in PAPERS if re.search(rf"\b{p}\b", text)}


def method_owners(root: Path) -> dict[str, set[str]]:
    """Module name under melrepro.methods -> the papers whose code imports it.

    A paper's code is its package (src/melrepro/papers/<paper>/) and the scripts and rule file
    named after it.
    """
    methods_dir = root / "src" / "melrepro" / "methods"
    modules = {p.stem for p in methods_dir.glob("*.py") if p.stem != "__init__"}
    modules |= {
        p.name for p in methods_dir.iterdir() if p.is_dir() and (p / "__init__.py").exists()
    }
    owners: dict[str, set[str]] = {m: set() for m in modules}
    for paper in PAPERS:
        files = list((root / "src" / "melrepro" / "papers" / paper).glob("*.py"))
        files += [p for p in (root / "scripts").glob("*.py") if paper in p.stem]
        for path in files:
            source = path.read_text(encoding="utf-8")
            for module in modules:
                if re.search(
                    rf"melrepro\.methods\.{module}\b|from melrepro\.methods import[^\n]*\b{module}\b"
                    rf"|from melrepro\.methods import \([^)]*\b{module}\b",
                    source,
                ):
                    owners[module].add(paper)
    return owners


def attribute(
    path: str, config_section: str | None, owners: dict[str, set[str]], text: str = ""
) -> str:
    """The paper a mark at ``path`` belongs to (see the module docstring), or ``shared``."""
    named = re.match(r"([a-z_0-9]+):", text)
    if named and named.group(1) in PAPERS:
        return named.group(1)
    parts = path.split("/")
    if path.startswith("src/melrepro/papers/") and parts[3] in PAPERS:
        return parts[3]
    if parts[0] in ("scripts", "workflow") and len(_papers_named(parts[-1])) == 1:
        return _papers_named(parts[-1]).pop()
    if parts[0] == "config":
        return config_section if config_section in PAPERS else SHARED
    if path.startswith("src/melrepro/methods/"):
        module = parts[3].removesuffix(".py")
        users = owners.get(module, set())
        if len(users) == 1:
            return next(iter(users))
    return SHARED


def _scanned_files(root: Path) -> list[Path]:
    files = [root / name for name in EXTRA_FILES if (root / name).is_file()]
    for folder in SCAN_ROOTS:
        base = root / folder
        if base.is_dir():
            files += [p for p in base.rglob("*") if p.is_file() and p.suffix in SUFFIXES]
    # Not in the marks: this module's own docstring and the report it writes.
    return sorted(p for p in files if p.resolve() != Path(__file__).resolve())


def scan(root: Path | str) -> list[Mark]:
    """Every mark under ``root`` (a repository checkout), sorted by paper, file and line."""
    root = Path(root)
    owners = method_owners(root) if (root / "src" / "melrepro" / "methods").is_dir() else {}
    marks = []
    for path in _scanned_files(root):
        relative = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        found = find_marks(lines)
        if not found:
            continue
        scopes = _code_scopes(text) if path.suffix == ".py" else []
        for line_number, explanation in found:
            section = None
            if path.suffix in (".yaml", ".yml"):
                section, where = _config_where(lines, line_number)
            elif path.suffix == ".py":
                where = _code_where(scopes, lines, line_number)
            else:
                where = "rule file"
            paper = attribute(relative, section, owners, explanation)
            marks.append(Mark(relative, line_number, explanation, where, paper))
    order = {p: i for i, p in enumerate([*PAPERS, SHARED])}
    return sorted(marks, key=lambda m: (order[m.paper], m.path, m.line))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(marks: list[Mark]) -> str:
    """docs/deviations.md: a table per paper (in PAPERS order), then the shared one."""
    out = [
        "# Departures from the papers",
        "",
        "Generated by `python -m melrepro.report.deviations` from the `# DEVIATION:` marks in",
        "`src/`, `scripts/`, `workflow/` and `config/`; do not edit by hand (tests/test_deviations.py",
        "fails when this file is out of date). A mark reads `<what the paper does> -> <what we do>,",
        "<why>`. Marks in `config/config.yaml` concern the embedded default run only, marks in",
        "`config/isic.yaml` the real run, marks in code every run that takes that path.",
        "",
    ]
    for paper, heading in [
        *PAPERS.items(),
        (SHARED, "shared: data, training core, more than one paper"),
    ]:
        rows = [m for m in marks if m.paper == paper]
        out += [f"## {heading}", ""]
        if not rows:
            out += ["No marks.", ""]
            continue
        out += ["| file | where | what |", "|---|---|---|"]
        out += [f"| `{m.path}` | `{_cell(m.where)}` | {_cell(m.text)} |" for m in rows]
        out.append("")
    return "\n".join(out)


def _repository_root() -> Path:
    # src/melrepro/report/deviations.py -> the checkout holding src/
    return Path(__file__).resolve().parents[3]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=_repository_root(), help="repository root")
    parser.add_argument(
        "--output", type=Path, default=None, help="default: <root>/docs/deviations.md"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if out of date or a mark is empty",
    )
    args = parser.parse_args(argv)
    output = args.output or args.root / "docs" / "deviations.md"
    marks = scan(args.root)
    empty = marks_without_explanation(marks)
    for mark in empty:
        sys.stderr.write(f"{mark.path}:{mark.line}: DEVIATION mark without an explanation\n")
    text = render(marks)
    if args.check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            sys.stderr.write(f"{output} is out of date: python -m melrepro.report.deviations\n")
            return 1
        return 1 if empty else 0
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    sys.stdout.write(f"{output}: {len(marks)} marks\n")
    return 1 if empty else 0


if __name__ == "__main__":
    sys.exit(main())
