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
