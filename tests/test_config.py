"""Both shipped configs validate against the schemas, the schemas catch typos, the real run takes
nothing from the embedded default (issue 19), and its settings are the papers'."""

import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

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


# The real run is isic.yaml alone (the Snakefile reads config.yaml only without --configfile).
@pytest.mark.parametrize("files", [("config.yaml",), ("isic.yaml",)], ids=["default", "isic"])
def test_shipped_configs_validate(files):
    """Check the default config and the real-data config pass every schema."""
    config = _merged(*files)
    _validate(config, "config.schema.yaml")
    # isic.yaml has no twin: Snakemake fills data.synthetic with the schema default {}.
    _validate(config["data"].get("synthetic", {}), "synthetic.schema.yaml")
    for paper in PAPERS:
        if paper in config:
            _validate(config[paper], f"{paper}.schema.yaml")


def test_real_config_uses_real_data_and_pretrained_weights():
    """Check config/isic.yaml switches to the official archives and ImageNet weights."""
    config = _merged("isic.yaml")
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


# ---- the configuration as Snakemake resolves it (issue 19) ----

#: What the resolved-config copy of the workflow links from the repository (config/ is copied).
LINKED = ["workflow", "scripts", "envs", "profiles", "src"]


def _resolve(workdir: Path, *args: str, without_default: bool = False) -> dict:
    """The config the Snakefile ends with (files merged, schemas' defaults filled), for `args`.

    Runs `snakemake --list-rules` (parses the whole workflow, builds no DAG) in a copy whose
    Snakefile is the repository's plus a last line that dumps `config` as JSON. With
    `without_default`, the copy has no config/config.yaml.
    """
    workdir.mkdir()
    for name in LINKED:
        (workdir / name).symlink_to(ROOT / name)
    shutil.copytree(ROOT / "config", workdir / "config")
    if without_default:
        (workdir / "config" / "config.yaml").unlink()
    dump = workdir / "resolved_config.json"
    snakefile = (ROOT / "Snakefile").read_text()
    snakefile += f"\nimport json\n\nwith open({str(dump)!r}, 'w') as f:\n    json.dump(config, f)\n"
    (workdir / "Snakefile").write_text(snakefile)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--list-rules", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads(dump.read_text())


@pytest.fixture(scope="module")
def resolved(tmp_path_factory):
    """The default, the default named with --configfile, the real run, and the real run in a
    copy without config/config.yaml, each as Snakemake resolves it."""
    root = tmp_path_factory.mktemp("resolved")
    real = ("--configfile", "config/isic.yaml")
    return {
        "default": _resolve(root / "default"),
        "default_named": _resolve(root / "default_named", "--configfile", "config/config.yaml"),
        "real": _resolve(root / "real", *real),
        "real_alone": _resolve(root / "real_alone", *real, without_default=True),
    }


def _leaves(value, path=()):
    """{dotted path: value} of every leaf (an empty dict is a leaf)."""
    if isinstance(value, dict) and value:
        leaves = {}
        for key, item in value.items():
            leaves.update(_leaves(item, (*path, key)))
        return leaves
    return {".".join(path): value}


def test_real_config_inherits_nothing_from_the_embedded_default(resolved):
    """Check the real run resolves to the same config with config/config.yaml deleted, so no value
    of it comes from the embedded default; the default's own overrides (values it sets that the
    real run does not have, e.g. sp_graphs' 5 folds) are listed in the failure."""
    default = _leaves(resolved["default"])
    real = _leaves(resolved["real"])
    alone = _leaves(resolved["real_alone"])
    # The default's overrides: what Snakemake's resolution takes from config.yaml alone. The test
    # has teeth only if there are such values (the default's folds and lighter classifiers).
    overrides = {k: v for k, v in default.items() if alone.get(k, "<unset>") != v}
    assert "sp_graphs.n_splits" in overrides
    assert "sp_graphs.classifier_settings.n_estimators" in overrides
    inherited = [
        f"{key}: real {real.get(key, '<unset>')!r}, without config.yaml "
        f"{alone.get(key, '<unset>')!r}, config.yaml {default.get(key, '<unset>')!r}"
        for key in sorted(set(real) | set(alone))
        if real.get(key, "<unset>") != alone.get(key, "<unset>")
    ]
    assert not inherited, "the real run inherits from config/config.yaml:\n" + "\n".join(inherited)
    assert resolved["real"]["data"]["source"] == "isic"


def test_default_config_resolves_the_same_named_or_not(resolved):
    """Check `snakemake` and `snakemake --configfile config/config.yaml` (as tests and scripts
    call it, with overlays after it) resolve to the same embedded default: the synthetic twin."""
    assert resolved["default"] == resolved["default_named"]
    assert resolved["default"]["data"]["source"] == "synthetic"
    assert resolved["default"]["sp_graphs"]["n_splits"] == 5


class PaperValue(NamedTuple):
    """A setting the paper gives (or, where it is silent, the reference it defers to)."""

    path: str  # dotted path in the resolved config
    value: object  # the paper's value
    where: str  # section of the paper (../shared/papers/<id>_*.txt) or the stated reference
    deviation: bool = False  # isic.yaml departs on purpose and marks it `# DEVIATION:`


#: Per paper, the real run's settings the paper fixes: folds, estimators, epochs, image sizes,
#: batch sizes, learning rates and the like. Read from the papers (sections cited).
PAPER_VALUES = {
    "gcn_mil": [  # paper 000
        PaperValue("pretrained", True, "§3: ResNet18 initialised from ImageNet"),
        PaperValue("gcn_mil.cache_res", "orig", "§2.2: blocks of the original image"),
        PaperValue("gcn_mil.scale", 1.0, "§2.2: blocks of the original image"),
        PaperValue("gcn_mil.block_size", 224, "§3.1: 224 x 224 blocks"),
        PaperValue("gcn_mil.strides", [50, 120, 200], "§3.1 Eq. 4"),
        PaperValue("gcn_mil.height_bounds", [1000, 2000], "§3.1 Eq. 4"),
        PaperValue("gcn_mil.radius_factor", math.sqrt(2), "§2.2 Eq. 1: sqrt(2) k"),
        PaperValue(
            "gcn_mil.rotation_steps",
            {"melanoma": 18, "seborrheic_keratosis": 18, "nevus": 45},
            "§2.1 Table 1",
        ),
        PaperValue("gcn_mil.dihedral_views", 8, "§2.1: random flips and 90° rotations"),
        PaperValue("gcn_mil.model.hidden_channels", 512, "Table 2: GCN(512, 512)"),
        PaperValue("gcn_mil.model.attention_channels", 128, "Table 2: L = 128"),
        PaperValue("gcn_mil.model.init", "ones", "§3: weights 1, biases 0", deviation=True),
        PaperValue(
            "gcn_mil.freeze_backbone", False, "§3: ResNet18 trained from ImageNet", deviation=True
        ),
        PaperValue("gcn_mil.train.epochs", 400, "§3: maximum epoch 400"),
        PaperValue("gcn_mil.train.lr", 1e-5, "§3: initial learning rate 0.00001"),
        PaperValue("gcn_mil.train.lr_milestone", 200, "§3: at 200 epochs"),
        PaperValue("gcn_mil.train.lr_after", 1e-4, "§3: 'drop to 0.0001'"),
        PaperValue("gcn_mil.train.momentum", 0.9, "§3: SGD, 0.9 momentum"),
        PaperValue("gcn_mil.train.batch_size", 1, "§3: batch size 1"),
        PaperValue("gcn_mil.n_runs", 5, "§3: average of five results"),
        PaperValue(
            "gcn_mil.thresholds",
            {"start": 0.0, "stop": 1.0, "step": 0.05},
            "§2.3: 0 to 1.0 every 0.05",
        ),
    ],
    "sp_graphs": [  # paper 001
        PaperValue("sp_graphs.n_splits", 10, "§5, §6.1: stratified 10-fold cross-validation"),
        PaperValue("data.splits.cv_folds", 10, "§6.1: stratified 10-fold cross-validation"),
        PaperValue("sp_graphs.classifier_settings.n_select", 150, "§5, §6.1: top 150 features"),
        # The paper names the classifiers only (§6.1): scikit-learn's defaults (null = 100 trees
        # of RF and GB, 50 of AB; MLP 200 iterations; QDA without shrinkage; L1 C = 1).
        PaperValue("sp_graphs.classifier_settings.n_estimators", None, "§6.1 silent: sklearn"),
        PaperValue("sp_graphs.classifier_settings.mlp_max_iter", 200, "§6.1 silent: sklearn"),
        PaperValue("sp_graphs.classifier_settings.qda_shrinkage", None, "§6.1 silent: sklearn"),
        PaperValue("sp_graphs.classifier_settings.l1_c", 1.0, "§5 silent: sklearn"),
        PaperValue(
            "sp_graphs.classifiers",
            ["SVM", "KNN", "QDA", "RF", "GB", "AB", "MLP"],
            "§6.3: the seven classifiers of Tables 1-11",
        ),
        PaperValue("sp_graphs.features.seg_levels", [20, 40, 60, 80, 100], "§6.1"),
        PaperValue("sp_graphs.features.shg_levels", [5, 10, 20, 40, 80], "Tables 8-10, n = 5-80"),
        PaperValue("sp_graphs.features.prune_taus", [0.25, 0.5, 0.75], "§7.4, Table 11"),
        PaperValue("sp_graphs.isic2017_splits", ["train", "test"], "§3: 2600 ISIC 2017 images"),
        PaperValue("data.archive_melanomas.limit", 300, "§3: 300 ISIC archive melanomas"),
    ],
    "siim2020": [  # paper 002
        PaperValue("pretrained", True, "§4: ImageNet1k V1 weights"),
        PaperValue("siim2020.train.backbone", "resnet18", "§4: only ResNet-18"),
        PaperValue("siim2020.cache_res", "sq256", "§5.1: resized to 256x256"),
        PaperValue("siim2020.jpeg_quality", 60, "§5.1: 'downsampled to 60%' (author's code: q60)"),
        PaperValue("data.splits.patient_85_15", [0.85, 0.15], "§5.1: 85:15 split by patient"),
        PaperValue("siim2020.benign_per_patient", 2, "§5.1: 2 images from each patient"),
        PaperValue("siim2020.copies", {"small3aug": 3, "small5aug": 5}, "§5.2: 3x and 5x aug"),
        PaperValue("siim2020.train.batch_size", 64, "§5.2: batch size fixed to 64"),
        PaperValue("siim2020.train.epochs", 10, "§5.2: epochs limited to 10"),
        PaperValue("siim2020.train.early_stopping_patience", 3, "§5.2: no improvement for 3"),
        PaperValue("siim2020.train.monitor", "val_loss", "§5.2: validation loss"),
        PaperValue("siim2020.train.lr", 1e-5, "§5.2: initialised at 1e-5"),
        PaperValue("siim2020.train.scheduler", "cosine", "§5.2: cosine annealing"),
        PaperValue("siim2020.train.optimizer", "adam", "§5.2: adam"),
    ],
    "effnet_ham": [  # paper 003
        PaperValue("pretrained", True, "§3.2: pretrained on ImageNet"),
        PaperValue("data.splits.lesion_70_15_15", [0.70, 0.15, 0.15], "§2, §3.1: 70/15/15"),
        PaperValue("effnet_ham.recipe.backbone", "efficientnet_b0", "§3.2: EfficientNet-B0"),
        PaperValue("effnet_ham.recipe.image_size", 224, "§3.1 step 1: 224x224"),
        PaperValue("effnet_ham.recipe.batch_size", 32, "§3.2: batch size 32"),
        PaperValue("effnet_ham.recipe.accumulation_steps", 2, "§3.2: grad-acc doubles the batch"),
        PaperValue("effnet_ham.recipe.amp", True, "§3.2: mixed precision"),
        PaperValue("effnet_ham.recipe.optimizer", "adamw", "§3.2: AdamW"),
        PaperValue("effnet_ham.recipe.lr", 3e-4, "§3.2: learning rate 3e-4"),
        PaperValue("effnet_ham.recipe.weight_decay", 1e-4, "§3.2: weight decay 1e-4"),
        PaperValue("effnet_ham.recipe.cosine_t_max", 30, "§3.2: cosine over 30 epochs"),
        PaperValue("effnet_ham.recipe.epochs", 20, "§4, Fig. 2: all 20 epochs"),
        PaperValue("effnet_ham.recipe.loss", "focal", "§3.2: focal BCE"),
        PaperValue("effnet_ham.recipe.focal_alpha", 0.6, "§3.2: alpha 0.6"),
        PaperValue("effnet_ham.recipe.focal_gamma", 2.0, "§3.2: gamma 2"),
        PaperValue("effnet_ham.recipe.sampler_positive_fraction", 0.4, "§3.2: sampler 60/40"),
        PaperValue("effnet_ham.variants.baseline1.overrides.focal_alpha", 0.75, "§3.2: 0.75"),
        PaperValue("effnet_ham.variants.res300.overrides.image_size", 300, "§4.3.1: 300x300"),
        PaperValue("effnet_ham.variants.res300.overrides.epochs", 15, "§4.3.1: 15 epochs"),
        PaperValue("effnet_ham.variants.mixup.overrides.mixup_alpha", 0.2, "§4.3.2: mixup 0.2"),
        PaperValue("effnet_ham.variants.mixup.overrides.epochs", 15, "§4.3.2: 15 epochs"),
        PaperValue("effnet_ham.variants.shades_of_grey.overrides.epochs", 15, "§4.3.3: 15 epochs"),
    ],
    "gradcam_overlap": [  # paper 004; the paper trains with TIML, whose settings fill its gaps
        PaperValue("pretrained", True, "§3: pre-trained on ImageNet"),
        PaperValue("gradcam_overlap.models.vgg16.backbone", "vgg16", "§3: VGG16"),
        PaperValue("gradcam_overlap.models.vgg16.image_size", 450, "§3: 450x450"),
        PaperValue("gradcam_overlap.models.vgg16.layer", "block5_conv3", "§3"),
        PaperValue("gradcam_overlap.models.vgg16.grid", [28, 28], "§3: 28x28"),
        PaperValue("gradcam_overlap.models.resnet50.backbone", "resnet50", "§3: RESNET50"),
        PaperValue("gradcam_overlap.models.resnet50.image_size", 227, "§3: 227x227"),
        PaperValue("gradcam_overlap.models.resnet50.layer", "res5c_branch2c", "§3"),
        PaperValue("gradcam_overlap.models.resnet50.grid", [8, 8], "§3: 8x8"),
        PaperValue("gradcam_overlap.train.head_hidden", 2048, "§3: 2048 nodes"),
        PaperValue("gradcam_overlap.example", "ISIC_0000013", "Figs. 1, 2, 4, 5"),
        PaperValue(
            "data.splits.class_floor_80_10_10.fractions", [0.1, 0.1], "§3: 2529 held out (TIML)"
        ),
        PaperValue("gradcam_overlap.train.optimizer", "sgd", "§3 silent: TIML SGD"),
        PaperValue("gradcam_overlap.train.lr", 1e-5, "§3 silent: TIML 1e-5"),
        PaperValue("gradcam_overlap.train.batch_size", 32, "§3 silent: TIML 32"),
        PaperValue("gradcam_overlap.train.epochs", 5, "§3 silent: TIML example 5", deviation=True),
    ],
}


def _get(config: dict, path: str):
    value = config
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return "<unset>"
        value = value[key]
    return value


def _same(real, paper) -> bool:
    if isinstance(paper, float) and isinstance(real, (int, float)):
        return math.isclose(real, paper, rel_tol=1e-9)
    return real == paper


def _marked_deviation(path: str) -> bool:
    """Whether config/isic.yaml's comment block just above `path`'s key says `DEVIATION:`."""
    lines = (ROOT / "config" / "isic.yaml").read_text().splitlines()
    start, indent = -1, -1
    for key in path.split("."):
        pattern = re.compile(rf"^(\s*){re.escape(key)}:")
        for number in range(start + 1, len(lines)):
            line = lines[number]
            depth = len(line) - len(line.lstrip())
            if line.strip() and not line.lstrip().startswith("#") and depth <= indent:
                return False  # left the parent's block without finding the key
            match = pattern.match(line)
            if match:
                start, indent = number, depth
                break
        else:
            return False
    above = start - 1
    while above >= 0 and lines[above].strip().startswith("#"):
        if "DEVIATION:" in lines[above]:
            return True
        above -= 1
    return "# DEVIATION:" in lines[start]


@pytest.mark.parametrize("paper", list(PAPER_VALUES))
def test_real_settings_are_the_papers(resolved, paper):
    """Check every setting a paper gives equals the real run's resolved value, unless isic.yaml
    marks it DEVIATION (then it must differ, and the mark must be there). Prints the table."""
    rows, wrong = [], []
    for item in PAPER_VALUES[paper]:
        real = _get(resolved["real"], item.path)
        same = _same(real, item.value)
        if item.deviation:
            status = "DEVIATION" if not same and _marked_deviation(item.path) else "WRONG"
        else:
            status = "paper" if same else "WRONG"
        rows.append(f"{item.path:58} {real!r:>28} {item.value!r:>28}  {status:9} {item.where}")
        if status == "WRONG":
            wrong.append(item.path)
    table = "\n".join([f"{'setting':58} {'real run':>28} {'paper':>28}  status", *rows])
    print(f"\n{paper}\n{table}")
    assert not wrong, (
        f"{paper}: real run differs from the paper unmarked (or a stale mark):\n{table}"
    )


def _dry_run_error(tmp_path: Path, overlay: str) -> str:
    """What `snakemake -n` says for the default config plus ``overlay`` (a failing run)."""
    (tmp_path / "overlay.yaml").write_text(overlay)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", "config/config.yaml",
         str(tmp_path / "overlay.yaml")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    return result.stdout + result.stderr


def test_schema_error_names_the_paper_and_the_key(tmp_path):
    """Check an invalid `train.epochs` (a key path several papers share) names its section."""
    message = _dry_run_error(tmp_path, "siim2020:\n  train:\n    epochs: -3\n")
    assert "config section 'siim2020'" in message
    assert "['train']['epochs']" in message


def test_figures_variant_must_name_a_variant(tmp_path):
    """Check effnet_ham.figures_variant naming no variant stops with the key and the choices."""
    message = _dry_run_error(tmp_path, "effnet_ham:\n  figures_variant: nope\n")
    assert "effnet_ham.figures_variant is 'nope'" in message
    assert "baseline2" in message
