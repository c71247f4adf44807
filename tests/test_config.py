"""Both shipped configs validate against the schemas, and the schemas catch typos."""

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "workflow" / "schemas"
PAPERS = ["gcn_mil", "sp_graphs", "siim2020", "effnet_ham", "gradcam_overlap"]


def _validate(instance, schema_name):
    schema = yaml.safe_load((SCHEMAS / schema_name).read_text())
    jsonschema.Draft202012Validator(schema).validate(instance)


def _merged(*names):
    config = {}
    for name in names:
        layer = yaml.safe_load((ROOT / "config" / name).read_text())
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
    return config


@pytest.mark.parametrize(
    "files", [("config.yaml",), ("config.yaml", "isic.yaml")], ids=["default", "isic"]
)
def test_shipped_configs_validate(files):
    """Check the default config and the real-data config pass every schema."""
    config = _merged(*files)
    _validate(config, "config.schema.yaml")
    _validate(config["data"]["synthetic"], "synthetic.schema.yaml")
    for paper in PAPERS:
        if paper in config:
            _validate(config[paper], f"{paper}.schema.yaml")


def test_real_config_uses_real_data_and_pretrained_weights():
    """Check config/isic.yaml switches to the official archives and ImageNet weights."""
    config = _merged("config.yaml", "isic.yaml")
    assert config["data"]["source"] == "isic"
    assert config["pretrained"] is True


def test_schema_rejects_typos_and_bad_choices():
    """Check an unknown key and a bad enum value are refused."""
    config = _merged("config.yaml")
    typo = copy.deepcopy(config)
    typo["data"]["sorce"] = "isic"
    with pytest.raises(jsonschema.ValidationError, match="sorce"):
        _validate(typo, "config.schema.yaml")
    bad = copy.deepcopy(config)
    bad["data"]["source"] = "kaggle"
    with pytest.raises(jsonschema.ValidationError, match="kaggle"):
        _validate(bad, "config.schema.yaml")
