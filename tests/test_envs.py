"""The per-rule conda environments parse and pin exactly what requirements.lock installs."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "envs").glob("*.yaml"))


def _lock():
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_every_rule_env_exists():
    """Check the four environments of DESIGN.md section 5 are there."""
    assert {p.stem for p in ENVS} == {"data", "classical", "torch", "report"}


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.stem)
def test_env_pins_agree_with_lock(path):
    """Check every pip pin of an env equals the lock's, and python is 3.11."""
    env = yaml.safe_load(path.read_text())
    assert env["channels"][0] == "conda-forge"
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    lock = _lock()
    assert pip, path
    for requirement in pip:
        name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", requirement).groups()
        assert lock[name.lower()] == version, (
            f"{path.name}: {requirement} vs lock {lock.get(name.lower())}"
        )


def test_torch_pins_are_the_project_pins():
    """Check torch 2.14.1 / torchvision 0.29.1 everywhere (the build on this machine's disk)."""
    lock = _lock()
    assert lock["torch"] == "2.14.1"
    assert lock["torchvision"] == "0.29.1"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.14.1" in project
    assert "torchvision==0.29.1" in project
    torch_env = yaml.safe_load((ROOT / "envs" / "torch.yaml").read_text())
    pip = next(d["pip"] for d in torch_env["dependencies"] if isinstance(d, dict))
    assert "torch==2.14.1" in pip
    assert "torchvision==0.29.1" in pip


# ---------------------------------------------------------------- every import has its package

#: Import names whose distribution on PyPI has another name (the rest are the same, PEP 503).
IMPORT_TO_DIST = {
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "torch_geometric": "torch-geometric",
    "pytorch_grad_cam": "grad-cam",
    "isic_cli": "isic-cli",
}


def _dist(import_name: str) -> str:
    return re.sub(r"[-_.]+", "-", IMPORT_TO_DIST.get(import_name, import_name)).lower()


def _env_packages(path: Path) -> set[str]:
    env = yaml.safe_load(path.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {_dist(requirement.split("==")[0]) for requirement in pip}


def missing_packages(script: Path, env: Path, src: Path) -> list[str]:
    """One line per third-party package that ``script`` imports (through melrepro, lazy imports
    included) and the conda env file ``env`` lacks: package, import chain."""
    from melrepro.report.script_imports import script_imports

    have = _env_packages(env)
    found = script_imports(script, src).third_party
    return [
        f"{_dist(name)} (import {name}: {' -> '.join(chain)})"
        for name, chain in sorted(found.items())
        if _dist(name) not in have
    ]


def test_missing_package_checker_sees_a_lazy_import(tmp_path):
    """Check the checker names a package imported lazily two modules down, with its chain,
    and is content with an env that has it."""
    pkg = tmp_path / "src" / "melrepro"
    (pkg / "methods").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "methods" / "__init__.py").write_text("")
    (pkg / "methods" / "masks.py").write_text("def f():\n    from skimage import morphology\n")
    script = tmp_path / "run.py"
    script.write_text("import numpy\nfrom melrepro.methods.masks import f\n")
    env = tmp_path / "env.yaml"
    env.write_text("dependencies:\n  - pip:\n      - numpy==2.4.6\n")
    assert missing_packages(script, env, tmp_path / "src") == [
        "scikit-image (import skimage: run.py -> melrepro.methods.masks)"
    ]
    env.write_text("dependencies:\n  - pip:\n      - numpy==2.4.6\n      - scikit-image==0.26.0\n")
    assert missing_packages(script, env, tmp_path / "src") == []


def test_every_rule_env_holds_what_its_script_imports():
    """Check each rule's conda env lists every third-party package its script imports through
    melrepro (both configs: the download rules exist only with data.source: isic), and every
    such package is one requirements.lock pins."""
    from workflow_rules import rule_facts

    rules = {**rule_facts(), **rule_facts(configfiles=("config/isic.yaml",))}
    with_env = {n: f for n, f in rules.items() if f["script"] and f["conda"]}
    assert len(with_env) == len([n for n, f in rules.items() if f["script"]]) > 40
    lock = {_dist(name) for name in _lock()}
    gaps, unlocked = [], set()
    for name, facts in sorted(with_env.items()):
        script, env = Path(facts["script"]), Path(facts["conda"])
        for line in missing_packages(script, env, ROOT / "src"):
            gaps.append(f"{name} ({script.name}, envs/{env.name}): {line}")
        unlocked |= {d for d in map(_dist, _imports(script)) if d not in lock}
    assert gaps == [], "\n".join(gaps)
    assert unlocked == set()


def _imports(script: Path) -> set[str]:
    from melrepro.report.script_imports import script_imports

    return set(script_imports(script, ROOT / "src").third_party)
