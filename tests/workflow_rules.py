"""The rules as Snakemake parses them (names, scripts, conda envs, local or not, resources),
for tests that check properties of every rule without regex over the rule files.

The workflow is parsed in a subprocess: the Snakefile puts src/ on sys.path and sets
TORCH_HOME, which must not leak into the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Runs in the workflow folder; prints one JSON object, rule name -> facts. Callable resources
#: (mem_mb and runtime that grow with the attempt) are evaluated at attempts 1 and 2 without
#: wildcards (None), which the resource functions of this workflow do not read.
_PARSE = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (
    ConfigSettings, OutputSettings, ResourceSettings, StorageSettings,
)

def value(resource, attempt):
    if resource.is_evaluable():
        resource = resource.evaluate(None, attempt=attempt, threads=1, input=[], output=[])
    return resource.value

configfiles = [Path(p) for p in sys.argv[1:]]
with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(),
        config_settings=ConfigSettings(configfiles=configfiles),
        storage_settings=StorageSettings(),
        snakefile=Path("Snakefile"),
    )._workflow
    facts = {}
    for rule in workflow.rules:
        script = rule.basedir.join(rule.script).get_path_or_uri(secret_free=True) if rule.script else None
        conda = rule.basedir.join(rule.conda_env).get_path_or_uri(secret_free=True) if rule.conda_env else None
        facts[rule.name] = {
            "script": script,
            "conda": conda,
            "local": rule.name in workflow._localrules,
            "resources": {
                name: [value(res, 1), value(res, 2)]
                for name, res in rule.resources.items()
                if name in ("mem_mb", "runtime", "gpu", "_cores")
            },
        }
print("RULE-FACTS " + json.dumps({"rules": facts, "config": workflow.config}))
"""


def parse_workflow(workdir: Path = ROOT, configfiles: tuple[str, ...] = ()) -> dict:
    """{"rules": rule name -> {script, conda, local, resources: {name: [attempt 1, attempt 2]}},
    "config": the config the rules were made from}."""
    env = {**os.environ, "PYTHONPATH": str(workdir / "src")}
    result = subprocess.run(
        [sys.executable, "-c", _PARSE, *configfiles],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RULE-FACTS "))
    return json.loads(line.removeprefix("RULE-FACTS "))


def rule_facts(workdir: Path = ROOT, configfiles: tuple[str, ...] = ()) -> dict[str, dict]:
    """Rule name -> {script, conda, local, resources: {name: [attempt 1, attempt 2]}}."""
    return parse_workflow(workdir, configfiles)["rules"]
