"""The workflow as a Snakemake module: a wrapper workflow in another folder, as `snakedeploy
deploy-workflow` writes it, uses a copy of this one (`module ...: snakefile:`, `use rule * from`).

The wrapper's working directory has none of this workflow's files (config/paper_values/, docs/,
src/), so every one of them must be found beside the module's Snakefile, and the jobs must import
the module's own melrepro package.

A remote module (snakedeploy's `github(...)`) is stood in for by a copy served over HTTP on
127.0.0.1: Snakemake then fetches only the Snakefile, the rule files, schemas, scripts and shipped
files it needs, never src/, so the jobs import an installed melrepro (pip-installed here from the
copy, into a folder of its own).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_workflow import _copy_workflow, _jobs, _tiny_config

from melrepro.data.layouts import DATASETS

WRAPPER = """\
configfile: "config/config.yaml"


module melrepro:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from melrepro{rename}
"""

#: Put on PYTHONPATH, it hides every installed melrepro (the editable install of the test's own
#: environment included) from the Snakemake process and every job: only the module's src/ is left.
HIDE_INSTALLED = """\
import os
import sys
from pathlib import Path

_allowed = os.environ["MODULE_ROOT"]
sys.path[:] = [
    p
    for p in sys.path
    if not (Path(p or ".") / "melrepro").is_dir() or os.path.abspath(p).startswith(_allowed)
]
"""


def _wrapper(module: Path, config: dict, rename: str = "", snakefile: str | None = None) -> Path:
    """A wrapper folder beside `module` (a copy of this workflow) that uses it with `config`;
    `snakefile` is the module's address when it is not the copy's path (a remote module)."""
    wrapper = module.parent / "wrapper"
    (wrapper / "config").mkdir(parents=True)
    (wrapper / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    snakefile = WRAPPER.format(snakefile=snakefile or module / "Snakefile", rename=rename)
    (wrapper / "Snakefile").write_text(snakefile)
    return wrapper


def _snakemake(wrapper: Path, *args: str, env: dict | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=wrapper,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"snakemake {' '.join(args)} failed:\n{output[-6000:]}"
    return output


def _hide_installed(tmp_path: Path, module: Path) -> dict:
    """An environment for Snakemake in which no melrepro is importable but the module's src/."""
    hide = tmp_path / "hide_installed"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_INSTALLED)
    env = {**os.environ, "PYTHONPATH": str(hide), "MODULE_ROOT": str(module)}
    # The control: without the module's src/ on the path, melrepro is importable from nowhere.
    control = subprocess.run(
        [sys.executable, "-c", "import melrepro"], env=env, capture_output=True, check=False
    )
    assert control.returncode != 0
    return env


def test_wrapper_plans_every_paper_and_runs_jobs_from_the_module(tmp_path):
    """Check a wrapper (rules renamed melrepro_*) plans the default and runs two jobs from the module."""
    module = _copy_workflow(tmp_path)
    config = yaml.safe_load((module / "config" / "config.yaml").read_text())
    wrapper = _wrapper(module, config, rename=" as melrepro_*")
    env = _hide_installed(tmp_path, module)
    _assert_plans_every_paper(wrapper, env)
    # A file of the workflow (docs/) and a rule script that imports melrepro (run info), this
    # time with the test's own melrepro installed and on PYTHONPATH: the job must still import
    # the module's. Its run info tells which: code_version is the `git describe` of the checkout
    # the imported package lies in, and the module's copy lies in no checkout.
    targets = ["results/deviations.md", "results/data/tables/run_info.json"]
    _snakemake(wrapper, *targets, "--cores", "1")
    deviations = (module / "docs" / "deviations.md").read_text()
    assert (wrapper / "results" / "deviations.md").read_text() == deviations
    run_info = json.loads((wrapper / "results/data/tables/run_info.json").read_text())
    assert run_info["config"]["n_shards"] == config["data"]["n_shards"]
    assert run_info["seed"] == config["seed"]
    assert run_info["code_version"] == run_info["packages"]["melrepro"]


@pytest.mark.slow
def test_wrapper_runs_data_part_and_a_paper_table_from_the_module_package(tmp_path):
    """Check a wrapper runs one manifest and gcn_mil's tables and scorecard with no melrepro but the module's."""
    module = _copy_workflow(tmp_path)
    config = yaml.safe_load(_tiny_config(module).read_text())
    config["gcn_mil"]["activate"] = True
    wrapper = _wrapper(module, config)
    env = _hide_installed(tmp_path, module)
    targets = [
        "results/data/isic2017/manifest.parquet",
        "results/gcn_mil/tables/table01.csv",
        "results/scorecard/gcn_mil.csv",
    ]
    _snakemake(wrapper, *targets, "--cores", "2", env=env)

    _check_gcn_mil_outputs(wrapper, module)


def _assert_plans_every_paper(wrapper: Path, env: dict[str, str]) -> None:
    """`snakemake -n` in the wrapper plans the module's (renamed) rules for every dataset and paper."""
    jobs = _jobs(_snakemake(wrapper, "-n", "--quiet", "rules", env=env))
    assert jobs["melrepro_ingest_dataset"] == len(DATASETS)
    for paper in ("gcn_mil", "sp_graphs", "siim2020", "effnet_ham", "gradcam_overlap"):
        assert jobs[f"melrepro_tabulate_{paper}"] == 1
    assert jobs["melrepro_score_paper"] == 5


def _check_gcn_mil_outputs(wrapper: Path, module: Path) -> None:
    """The wrapper's isic2017 manifest holds every twin image, gcn_mil table01 is full, and its
    scorecard is scored against the module's config/paper_values/gcn_mil.csv: one row per number
    the paper reports of its own (the cited ones are other papers')."""
    manifest = pd.read_parquet(wrapper / "results/data/isic2017/manifest.parquet")
    truth = pd.read_csv(wrapper / "resources/archives/isic2017/synthetic_truth/truth.csv")
    assert len(manifest) == len(truth) > 0
    table = pd.read_csv(wrapper / "results/gcn_mil/tables/table01.csv")
    assert table.columns.tolist() == ["set", "Melanoma", "Seborrheic Keratosis", "Nevus"]
    assert len(table) > 0
    assert table.notna().all().all()
    scorecard = pd.read_csv(wrapper / "results/scorecard/gcn_mil.csv")
    paper_values = pd.read_csv(module / "config/paper_values/gcn_mil.csv")
    own = paper_values[paper_values["kind"] == "own"]
    key = ["artifact", "row", "column"]
    assert sorted(map(tuple, scorecard[key].values)) == sorted(map(tuple, own[key].values))


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves a folder; records each requested path instead of logging it."""

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        self.server.requested.append(self.path)


@pytest.fixture
def remote_module(tmp_path):
    """A copy of this workflow served on 127.0.0.1, its Snakefile's URL, the paths requested."""
    module = _copy_workflow(tmp_path)
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(module))
    )
    server.requested = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield module, f"http://127.0.0.1:{server.server_address[1]}/Snakefile", server.requested
    server.shutdown()
    server.server_close()


def _installed_package(tmp_path: Path, module: Path) -> dict:
    """`pip install` the module copy's package into a folder of its own (what a remote user does
    with `pip install git+https://...@<tag>`): an environment in which only that melrepro is
    importable, and the module's src/ is not (it is removed from the served copy)."""
    package = tmp_path / "package"
    package.mkdir()
    shutil.copytree(module / "src", package / "src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(Path(__file__).parents[1] / name, package / name)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(site), str(package)],
        check=True, capture_output=True,
    )  # fmt: skip
    shutil.rmtree(module / "src")
    env = _hide_installed(tmp_path, site)
    env["PYTHONPATH"] += os.pathsep + str(site)
    check = [sys.executable, "-c", "import melrepro; print(melrepro.__file__)"]
    where = subprocess.run(check, env=env, capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(site)
    return env


def test_remote_module_plans_runs_and_then_has_nothing_to_do(tmp_path, remote_module):
    """Check a wrapper whose module Snakefile is a URL plans every paper, runs jobs that read a
    shipped file (docs/) and import melrepro (the installed one), fetches nothing of src/, and
    plans nothing on the next run (a shipped file read through Snakemake's source cache lies in
    a new temporary folder each run: as an input it would rerun its jobs every time)."""
    module, url, requested = remote_module
    config = yaml.safe_load((module / "config" / "config.yaml").read_text())
    deviations = (module / "docs" / "deviations.md").read_text()
    env = _installed_package(tmp_path, module)
    wrapper = _wrapper(module, config, rename=" as melrepro_*", snakefile=url)
    _assert_plans_every_paper(wrapper, env)
    targets = ["results/deviations.md", "results/data/tables/run_info.json"]
    _snakemake(wrapper, *targets, "--cores", "1", env=env)
    assert (wrapper / "results" / "deviations.md").read_text() == deviations
    run_info = json.loads((wrapper / "results/data/tables/run_info.json").read_text())
    assert run_info["seed"] == config["seed"]
    assert "/Snakefile" in requested
    assert "/scripts/write_folder_run_info.py" in requested
    assert not [p for p in requested if p.startswith("/src/")]
    again = _snakemake(wrapper, *targets, "-n", env=env)
    assert "Nothing to be done" in again, again[-3000:]


@pytest.mark.slow
def test_remote_module_runs_data_part_a_paper_table_and_its_rule_graph(tmp_path, remote_module):
    """Check a remote module runs one manifest, gcn_mil's table, scorecard and rule-graph figure
    (a sub-run of Snakemake on the module's URL) with the installed melrepro."""
    module, url, requested = remote_module
    config = yaml.safe_load(_tiny_config(module).read_text())
    config["gcn_mil"]["activate"] = True
    env = _installed_package(tmp_path, module)
    wrapper = _wrapper(module, config, snakefile=url)
    targets = [
        "results/data/isic2017/manifest.parquet",
        "results/gcn_mil/tables/table01.csv",
        "results/scorecard/gcn_mil.csv",
        "results/gcn_mil/figures/fig01.png",
    ]
    _snakemake(wrapper, *targets, "--cores", "2", env=env)
    _check_gcn_mil_outputs(wrapper, module)
    assert (wrapper / "results/gcn_mil/figures/fig01.png").stat().st_size > 0
    assert not [p for p in requested if p.startswith("/src/")]
    again = _snakemake(wrapper, *targets, "-n", env=env)
    assert "Nothing to be done" in again, again[-3000:]
