"""A change in the methods reruns exactly the jobs whose scripts import it (params `code`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_workflow import _copy_workflow, _jobs, _tiny_config
from workflow_rules import rule_facts

from melrepro.report.script_imports import script_imports, source_digest

ROOT = Path(__file__).resolve().parents[1]


def _package(root: Path) -> Path:
    """A small melrepro under ``root/src``: a imports b lazily, c only under TYPE_CHECKING."""
    pkg = root / "src" / "melrepro"
    (pkg / "methods").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "methods" / "__init__.py").write_text("HELPER = 1\n")
    (pkg / "methods" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import numpy as np\n"
        "if TYPE_CHECKING:\n"
        "    import torch\n"
        "    from melrepro.methods import c\n"
        "else:\n"
        "    import json\n\n"
        "def f():\n"
        "    from melrepro.methods import b, HELPER\n"
        "    return b.g() + HELPER\n"
    )
    (pkg / "methods" / "b.py").write_text("def g():\n    import skimage.io\n    return 1\n")
    (pkg / "methods" / "c.py").write_text("import pandas\n")
    script = root / "scripts" / "run_a.py"
    script.parent.mkdir()
    script.write_text("import os\nfrom melrepro.methods.a import f\nf()\n")
    return script


def test_walker_follows_lazy_imports_and_skips_type_checking(tmp_path):
    """Check the walker reaches b through a lazy import, counts parent packages, resolves
    `from pkg import name` to the module or the __init__, and skips TYPE_CHECKING imports."""
    script = _package(tmp_path)
    found = script_imports(script, tmp_path / "src")
    assert set(found.modules) == {
        "melrepro",
        "melrepro.methods",
        "melrepro.methods.a",
        "melrepro.methods.b",
    }
    assert found.modules["melrepro.methods.b"] == (
        "run_a.py",
        "melrepro.methods.a",
        "melrepro.methods.b",
    )
    assert set(found.third_party) == {"numpy", "skimage"}  # not torch, pandas (c) or stdlib
    assert found.third_party["skimage"] == ("run_a.py", "melrepro.methods.a", "melrepro.methods.b")


def test_digest_moves_with_imported_code_only(tmp_path):
    """Check a comment in the lazily imported module changes the digest, one in an unimported
    module does not, and an import of a missing module is an error rather than a silent miss."""
    script = _package(tmp_path)
    src = tmp_path / "src"
    before = source_digest(script, src)
    assert source_digest(script, src) == before
    with (src / "melrepro" / "methods" / "c.py").open("a") as f:
        f.write("# not imported at run time\n")
    assert source_digest(script, src) == before
    with (src / "melrepro" / "methods" / "b.py").open("a") as f:
        f.write("# a comment\n")
    assert source_digest(script, src) != before
    stale = script.with_name("run_gone.py")
    stale.write_text("from melrepro.methods.gone import h\n")
    with pytest.raises(FileNotFoundError, match="melrepro.methods.gone"):
        source_digest(stale, src)


#: Cheap targets on the tiny config: the data jobs of isic2017 and one sp_graphs feature shard
#: (the only job here whose script imports melrepro.methods.graph_features).
TARGETS = [
    "results/sp_graphs/features/isic2017/shard-000.npz",
    "results/data/isic2017/splits/official.parquet",
]


def test_editing_a_method_reruns_exactly_its_jobs(tmp_path):
    """Build a few jobs in a scratch copy, add a comment to methods/graph_features.py, and check
    the dry run plans exactly the built jobs whose scripts import it (reason: params), nothing
    before the edit, and nothing again once the edit is undone."""
    workdir = _copy_workflow(tmp_path)
    _tiny_config(workdir)
    # The copy's scripts must import the copy's package (the venv's editable install points
    # at the main checkout), and the Snakefile digests the copy's src/.
    env = {**os.environ, "PYTHONPATH": str(workdir / "src")}

    def snakemake(*args: str) -> str:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                *TARGETS,
                *args,
                "--configfile",
                "config/tiny.yaml",
            ],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    built = _jobs(snakemake("-n", "--quiet", "rules"))
    built.pop("total")
    snakemake("--cores", "2")
    assert "Nothing to be done" in snakemake("-n")

    module = workdir / "src" / "melrepro" / "methods" / "graph_features.py"
    original = module.read_text()
    module.write_text(original + "# a comment changes the digest\n")
    facts = rule_facts(workdir, ("config/tiny.yaml",))
    dependent = {
        rule
        for rule in built
        if "melrepro.methods.graph_features"
        in script_imports(Path(facts[rule]["script"]), workdir / "src").modules
    }
    assert dependent == {"extract_sp_graphs_features"}  # the walker sees the sp_graphs chain
    assert set(built) - dependent  # and the data jobs it does not reach
    plan = snakemake("-n")
    assert "Nothing to be done" not in plan
    rerun = _jobs(plan)
    rerun.pop("total")
    assert set(rerun) == dependent
    changed = plan.split("params have changed since last execution:")[1].split("\n")[1].strip()
    assert set(changed.split(", ")) == dependent

    module.write_text(original)  # the digest reads contents, not times: undone is unchanged
    assert "Nothing to be done" in snakemake("-n")
