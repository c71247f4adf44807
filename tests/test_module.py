"""The workflow as a Snakemake module: a wrapper workflow in another folder, as `snakedeploy
deploy-workflow` writes it, uses a copy of this one (`module ...: snakefile:`, `use rule * from`).

The wrapper's working directory has none of this workflow's files (config/paper_values/, docs/,
src/), so every one of them must be found beside the module's Snakefile, and the jobs must import
the module's own melrepro package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def _wrapper(module: Path, config: dict, rename: str = "") -> Path:
    """A wrapper folder beside `module` (a copy of this workflow) that uses it with `config`."""
    wrapper = module.parent / "wrapper"
    (wrapper / "config").mkdir(parents=True)
    (wrapper / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    snakefile = WRAPPER.format(snakefile=module / "Snakefile", rename=rename)
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
    jobs = _jobs(_snakemake(wrapper, "-n", "--quiet", "rules", env=env))
    assert jobs["melrepro_ingest_dataset"] == len(DATASETS)
    for paper in ("gcn_mil", "sp_graphs", "siim2020", "effnet_ham", "gradcam_overlap"):
        assert jobs[f"melrepro_tabulate_{paper}"] == 1
    assert jobs["melrepro_score_paper"] == 5
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

    manifest = pd.read_parquet(wrapper / "results/data/isic2017/manifest.parquet")
    truth = pd.read_csv(wrapper / "resources/archives/isic2017/synthetic_truth/truth.csv")
    assert len(manifest) == len(truth) > 0
    table = pd.read_csv(wrapper / "results/gcn_mil/tables/table01.csv")
    assert table.columns.tolist() == ["set", "Melanoma", "Seborrheic Keratosis", "Nevus"]
    assert len(table) > 0
    assert table.notna().all().all()
    scorecard = pd.read_csv(wrapper / "results/scorecard/gcn_mil.csv")
    # Scored against the module's config/paper_values/gcn_mil.csv: one row per number the paper
    # reports of its own (the cited ones are other papers').
    paper_values = pd.read_csv(module / "config/paper_values/gcn_mil.csv")
    own = paper_values[paper_values["kind"] == "own"]
    key = ["artifact", "row", "column"]
    assert sorted(map(tuple, scorecard[key].values)) == sorted(map(tuple, own[key].values))
