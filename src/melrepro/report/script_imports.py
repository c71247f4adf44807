"""What a rule script runs: the melrepro modules it imports, transitively, and the third-party
packages they import.

Snakemake's code trigger sees only the script named in ``script:`` (Snakemake issue 3028:
imported library code is not tracked), and the scripts here are thin entry points into
melrepro. The workflow therefore puts :func:`source_digest` of every script's melrepro modules in
the rule's params, so that editing a method reruns exactly the jobs that import it
(workflow/rules/common.smk), and tests/test_envs.py checks with :func:`script_imports` that each
rule's conda environment holds every third-party package its script needs.

Imports are read with :mod:`ast`, never executed: every ``import`` and ``from ... import`` at any
depth counts (lazy imports inside functions too, they run when the function does), except those
under ``if TYPE_CHECKING:``, which never run. Importing ``a.b.c`` runs ``a/__init__``,
``a/b/__init__`` and then ``c``; ``from a.b import c`` also reaches the module ``a.b.c`` when
``c`` is one (else ``c`` is a name defined in ``a/b/__init__``).

Stdlib only, so the Snakefile can use it while it parses.
"""

from __future__ import annotations

import ast
import hashlib
import sys
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

#: The package whose modules are followed; every other top-level name is stdlib or third-party.
PACKAGE = "melrepro"


@dataclass
class ScriptImports:
    """The transitive imports of one script.

    ``modules`` maps each melrepro module reached to the chain of modules through which the
    script reaches it (script first); ``third_party`` maps each top-level third-party import
    name to the chain up to the module that imports it.
    """

    script: Path
    modules: dict[str, tuple[str, ...]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    third_party: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(nodes):
    """Every Import/ImportFrom in or below ``nodes``, skipping the bodies of ``if TYPE_CHECKING:``."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_nodes(node.orelse)
        else:
            yield from _import_nodes(ast.iter_child_nodes(node))


@lru_cache(maxsize=4096)
def _imports_of_source(source: str, filename: str) -> tuple[tuple[str, int, tuple[str, ...]], ...]:
    """(module, relative level, imported names) of every import in ``source``."""
    out = []
    for node in _import_nodes([ast.parse(source, filename=filename)]):
        if isinstance(node, ast.Import):
            out += [(alias.name, 0, ()) for alias in node.names]
        else:
            out.append((node.module or "", node.level, tuple(a.name for a in node.names)))
    return tuple(out)


def module_file(module: str, src: Path) -> Path | None:
    """The file of a melrepro module under ``src`` (``pkg/__init__.py`` for a package)."""
    base = src.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _parents(module: str) -> list[str]:
    """``a.b.c`` -> ``[a, a.b, a.b.c]``: importing a module runs every parent package first."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _absolute(module: str, level: int, importer: str, importer_is_package: bool) -> str:
    """The absolute name of ``from <level dots><module> import ...`` written in ``importer``."""
    if level == 0:
        return module
    package = importer.split(".") if importer_is_package else importer.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _targets(path: Path, name: str, src: Path) -> tuple[list[str], list[str]]:
    """(melrepro modules, third-party top-level names) imported by the file ``path``."""
    is_package = path.name == "__init__.py"
    ours, theirs = [], []
    for module, level, names in _imports_of_source(path.read_text(), str(path)):
        module = _absolute(module, level, name, is_package)
        top = module.split(".")[0]
        if top == PACKAGE:
            ours += _parents(module)
            ours += [f"{module}.{n}" for n in names if module_file(f"{module}.{n}", src)]
        elif top and top != "__future__" and top not in sys.stdlib_module_names:
            theirs.append(top)
    return ours, theirs


def script_imports(script: Path, src: Path) -> ScriptImports:
    """Walk ``script``'s imports breadth first (so each chain is a shortest one).

    ``src`` is the folder that holds the package (``src/``). A melrepro module that does not
    exist there raises FileNotFoundError: a stale import would otherwise hide from the digest.
    """
    script = Path(script)
    found = ScriptImports(script=script)
    queue = deque([(script, script.name, (script.name,))])
    while queue:
        path, name, chain = queue.popleft()
        ours, theirs = _targets(path, name, src)
        for top in theirs:
            found.third_party.setdefault(top, chain)
        for module in ours:
            if module in found.modules:
                continue
            file = module_file(module, src)
            if file is None:
                raise FileNotFoundError(f"{' -> '.join(chain)} imports {module}: not under {src}")
            found.modules[module] = (*chain, module)
            found.files[module] = file
            queue.append((file, module, (*chain, module)))
    return found


def source_digest(script: Path, src: Path) -> str:
    """A short SHA-256 of the melrepro files ``script`` imports: their paths and bytes.

    Comments count (a digest of the AST would miss nothing that runs, but a byte digest is what
    a reader can check with sha256sum). The script itself is left out: Snakemake tracks it.
    """
    digest = hashlib.sha256()
    files = script_imports(script, src).files.values()
    for path in sorted(files, key=lambda p: p.relative_to(src).as_posix()):
        digest.update(path.relative_to(src).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
