# Shared by the other .smk files. Config validation, dataset and paper tables, paths, input functions.

import math
import os
import re
import sys
from fnmatch import fnmatch
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.sourcecache import LocalSourceFile
from snakemake.utils import validate

#: Where this file lies. Not workflow.main_snakefile: when a wrapper workflow uses this one as a
#: module (snakedeploy), that is the wrapper's Snakefile, and the working directory is the
#: wrapper's folder. A remote module's basedir is a URL (github(...)) or a git object (gitfile(...)).
RULES_BASEDIR = workflow.current_basedir
#: The folder of this workflow's Snakefile when it lies on this machine (its clone, a local module).
WORKFLOW_ROOT = (
    Path(RULES_BASEDIR.get_path_or_uri(secret_free=True)).parents[1]
    if isinstance(RULES_BASEDIR, LocalSourceFile)
    else None
)


#: Where a remote module's shipped files are kept for rule inputs (see workflow_file).
MODULE_FILES = Path(".snakemake") / "melrepro_module_files"


def workflow_file(relative):
    """A file shipped with this workflow (config/paper_values/, docs/) as a path for rule inputs.

    Relative to the working directory when the workflow runs in its own folder (the paths, and
    so the rerun triggers, stay what they were), absolute when a wrapper workflow in another
    folder uses it as a local module. A remote module's file is fetched through Snakemake's
    source cache, whose copy lies in a new temporary folder, with a new mtime, on every run: as
    an input it would rerun its jobs every time. It is copied to MODULE_FILES instead, and only
    when its content changed, so the path is stable and the mtime moves with the content.
    """
    if WORKFLOW_ROOT is None:
        fetched = Path(
            workflow.sourcecache.get_path(RULES_BASEDIR.join(f"../../{relative}"))
        )
        kept = MODULE_FILES / relative
        content = fetched.read_bytes()
        if not kept.is_file() or kept.read_bytes() != content:
            kept.parent.mkdir(parents=True, exist_ok=True)
            partial = kept.with_name(f".{kept.name}.{os.getpid()}.tmp")
            partial.write_bytes(content)
            # Atomic: a parallel parse (a SLURM job) reads the old or the new file, never a part.
            os.replace(partial, kept)
        return str(kept)
    path = WORKFLOW_ROOT / relative
    return str(
        path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
    )


# The package in src/ beside this workflow is what the Snakefile (archive layouts, code digests)
# and every job import: first on sys.path here, first on PYTHONPATH for the jobs, which inherit
# the environment (local jobs; SLURM jobs parse this file again). So a rule script finds it in
# the main environment, where it wins over any installed copy, and in the per-rule conda
# environments, which do not install it, whether the workflow runs in its clone or as a local
# module. A remote module has no src/ here: the package must then be installed (README.md).
if WORKFLOW_ROOT is not None and (WORKFLOW_ROOT / "src" / "melrepro").is_dir():
    MELREPRO_SRC = WORKFLOW_ROOT / "src"
    sys.path.insert(0, str(MELREPRO_SRC))
    _pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if _pythonpath[:1] != [str(MELREPRO_SRC)]:
        os.environ.update(
            {"PYTHONPATH": os.pathsep.join([str(MELREPRO_SRC), *_pythonpath])}
        )
else:
    try:
        import melrepro
    except ImportError as error:
        raise WorkflowError(
            f"{RULES_BASEDIR.get_path_or_uri(secret_free=True)} is a remote module: install its "
            "melrepro package, of the same version, into the environment that runs Snakemake, "
            "e.g. pip install 'git+https://github.com/<owner>/<repo>@<tag>' (README.md)."
        ) from error
    MELREPRO_SRC = Path(melrepro.__file__).parents[1]

from melrepro.data.layouts import DATASETS as LAYOUTS
from melrepro.data.rehearsal import (
    DEFAULT_IMAGE_SIZE,
    REHEARSAL_LOCK,
    TASK2_IMAGE_LIST,
    generated_files,
    taken_files,
)
from melrepro.report.script_imports import source_digest
from melrepro.report.seeds import training_seed

validate(config, "../schemas/config.schema.yaml")
validate(config["data"]["synthetic"], "../schemas/synthetic.schema.yaml")

#: Paper keys in the order of DESIGN.md; a paper with a section in the config is validated
#: against its own schema and built by `rule all` when its `activate` is true.
PAPERS = ["gcn_mil", "sp_graphs", "siim2020", "effnet_ham", "gradcam_overlap"]
for _paper in PAPERS:
    if _paper in config:
        try:
            validate(config[_paper], f"../schemas/{_paper}.schema.yaml")
        except WorkflowError as error:
            # Papers share key paths (`train.epochs`): the message must say whose section it is.
            raise WorkflowError(
                f"config section '{_paper}' (workflow/schemas/{_paper}.schema.yaml): {error}"
            ) from None

#: Which datasets each paper reads (DESIGN.md section 1).
PAPER_DATASETS = {
    "gcn_mil": ["isic2017"],
    "sp_graphs": ["isic2017", "isic_archive_melanoma"],
    "siim2020": ["isic2020"],
    "effnet_ham": ["isic2018_task3"],
    # isic2017: the label of the one task-2 image that ISIC 2019 lacks
    "gradcam_overlap": ["isic2019", "isic2018_task2", "isic2017"],
}
DATASETS = list(LAYOUTS)
SOURCE = config["data"]["source"]
ARCHIVES = "resources/archives"

#: Every table and figure path, by paper; each paper's rule file fills its own entry.
ARTIFACTS = {}
#: Outputs across the papers that `rule all` builds too (report.smk fills it).
REPORT_TARGETS = []
#: The paper figure that shows the workflow's own rule graph (ARTIFACTS.md "diagram" rows).
RULEGRAPH_FIGURES = {"gcn_mil": "fig01", "sp_graphs": "fig04", "effnet_ham": "fig04"}


wildcard_constraints:
    dataset="|".join(DATASETS),
    shard=r"\d{3}",
    res=r"(sq|max)\d+|orig",
    split_name=r"official|cv10|lesion_70_15_15|patient_85_15|class_floor_80_10_10",
    paper="|".join(PAPERS),


def sorted_params(value):
    """`value` with every dict's keys sorted: schema validation fills defaults in an order that
    can differ between runs, and Snakemake would take the reordered params as changed.
    """
    if isinstance(value, dict):
        return {k: sorted_params(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sorted_params(v) for v in value]
    return value


def add_code_digests():
    """Give every step that runs a `script` the param `code`: a digest of the melrepro modules the
    script imports, transitively (melrepro.report.script_imports). Snakemake's code trigger sees
    only the thin script (Snakemake issue 3028), so without it a change in the methods would
    rerun nothing; with it the `params` rerun trigger reruns exactly the jobs that import the
    changed module. Called once at the end of the Snakefile, after every rule exists.
    """
    for step in own_rules():
        if step.script is not None:
            script = step.basedir.join(step.script)
            if not isinstance(script, LocalSourceFile):
                script = LocalSourceFile(workflow.sourcecache.get_path(script))
            path = script.get_path_or_uri(secret_free=True)
            step.set_params(code=source_digest(Path(path), MELREPRO_SRC))


def _is_own_file(snakefile):
    """Whether a rule's Snakefile (Rule.snakefile) is this workflow's Snakefile or a rule file."""
    if WORKFLOW_ROOT is not None:
        path = Path(os.path.abspath(snakefile))
        return (
            path == WORKFLOW_ROOT / "Snakefile"
            or path.parent == WORKFLOW_ROOT / "workflow/rules"
        )
    uri = RULES_BASEDIR.join("../../Snakefile").get_path_or_uri(secret_free=True)
    folder = RULES_BASEDIR.get_path_or_uri(secret_free=True)
    # the seed trainings (made with "use rule ... with") keep a source-file object here
    if hasattr(snakefile, "get_path_or_uri"):
        snakefile = snakefile.get_path_or_uri(secret_free=True)
    snakefile = str(snakefile)
    return snakefile == uri or snakefile.rsplit("/", 1)[0] == folder


def own_rules():
    """The rules this workflow defines; in a wrapper workflow, not the wrapper's own rules."""
    return [step for step in workflow.rules if _is_own_file(step.snakefile)]


#: The `gpu` resource of every deep-learning rule: none when the config pins the CPU, so that
#: SLURM does not reserve a GPU the job would not use (and locally `--resources gpu=N` is not
#: spent on it); such a job's claim_gpus(0) hides the machine's GPUs from it.
JOB_GPUS = 0 if config["device"] == "cpu" else 1


def grows_with_attempt(base):
    """A mem_mb or runtime that is `base` on the first attempt and `base * k` on the k-th: after
    an out-of-memory or time-limit kill, `--retries` (the SLURM profile sets 1) asks for more
    instead of failing the same way again."""
    return lambda wildcards, attempt: base * attempt


#: Short jobs (tables, figures, the scorecard, run info, rule-graph drawings; minutes and a
#: few GB at most) run on the submitting host under SLURM, where queueing one takes longer than
#: running it. Patterns, because a paper's rules exist only when its section is configured and some are
#: made in loops. Not plot_gcn_mil: it reads the full-resolution cache (16 GB in isic.yaml).
LOCAL_RULE_PATTERNS = [
    "count_classes",
    "tabulate_*",
    "plot_sp_graphs_*",
    "plot_siim2020_*",
    "write_siim2020_submission",
    "plot_effnet_ham_*",
    "plot_gradcam_overlap_*",
    "score_paper",
    "plot_scorecard",
    "summarize_scorecard",
    "draw_rulegraph_*",
    "write_folder_run_info",
    "copy_deviations",
    "plot_learning_curves",
]


def mark_short_rules_local():
    """Declare the rules that match LOCAL_RULE_PATTERNS local (the `localrules:` directive takes
    only literal names). Called once at the end of the Snakefile, after every rule exists.
    """
    # A wrapper that imports the rules with a prefix (`as melrepro_*`) renames them: the patterns too.
    patterns = [workflow.modifier.modify_rulename(p) for p in LOCAL_RULE_PATTERNS]
    workflow.localrules(
        *[
            step.name
            for step in own_rules()
            if any(fnmatch(step.name, pattern) for pattern in patterns)
        ]
    )


def active_papers():
    """Papers with a config section whose `activate` is true."""
    return [p for p in PAPERS if config.get(p, {}).get("activate", False)]


def active_datasets():
    """The datasets read by the active papers, plus those listed in `data.datasets`."""
    wanted = set(config["data"].get("datasets", []))
    for paper in active_papers():
        wanted.update(PAPER_DATASETS[paper])
    return [d for d in DATASETS if d in wanted]


def n_shards(dataset):
    return int(config["data"]["n_shards"][dataset])


def archive_folder(dataset):
    return f"{ARCHIVES}/{dataset}"


#: Datasets shipped as official files on the challenge hosts (the archive melanomas come from isic-cli).
FILE_DATASETS = [d for d in DATASETS if not LAYOUTS[d].folder]
MELANOMA_FOLDER = (
    f"{ARCHIVES}/isic_archive_melanoma/{LAYOUTS['isic_archive_melanoma'].folder}"
)


def fetched_files(dataset):
    """The official files of `dataset` that the download or link rules bring: all of them for
    source isic; for the rehearsal, its CSVs only (melrepro.data.rehearsal.taken_files).
    """
    if SOURCE == "rehearsal":
        return taken_files(dataset, archive_dir=bool(config["data"].get("archive_dir")))
    return LAYOUTS[dataset].files()


def official_file_regex():
    """A `file` wildcard regex that matches only the official names of the dataset before it.

    Each alternative is guarded by a look-behind on `<dataset>/`, so `isic2019/ISIC-2017_...zip`
    matches no rule.
    """
    return "|".join(
        f"(?<={re.escape(d)}/)(?:{'|'.join(re.escape(f) for f in fetched_files(d))})"
        for d in FILE_DATASETS
        if fetched_files(d)
    )


# ---- the rehearsal (data.source: rehearsal; melrepro.data.rehearsal) ----

REHEARSAL = {"image_size": DEFAULT_IMAGE_SIZE, "task2_image_list": None} | config[
    "data"
].get("rehearsal", {})


def rehearsal_lock(dataset):
    """The rehearsal's own lock of `dataset` (verify_archives input); nothing otherwise."""
    if SOURCE != "rehearsal":
        return []
    return [f"{ARCHIVES}/{dataset}/{REHEARSAL_LOCK}"]


def verify_lock(dataset):
    """The lock verify_archives checks against: the rehearsal's own, else the official one."""
    return (rehearsal_lock(dataset) or [config["data"]["checksums"]])[0]


def rehearsal_outputs(dataset):
    """What the rehearsal of `dataset` writes: its drawn zips, or the archive melanomas' folder."""
    if LAYOUTS[dataset].folder:
        return [directory(MELANOMA_FOLDER)]
    archive_dir = bool(config["data"].get("archive_dir"))
    return [
        f"{ARCHIVES}/{dataset}/{name}"
        for name in generated_files(dataset, archive_dir=archive_dir)
    ]


def task2_image_list():
    """data.rehearsal.task2_image_list, else the list's file in data.archive_dir (under
    isic2018_task2/ or flat): the task-2 training ids, which no official CSV lists."""
    if REHEARSAL["task2_image_list"]:
        return REHEARSAL["task2_image_list"]
    archive_dir = config["data"].get("archive_dir")
    candidates = [
        Path(archive_dir) / sub / TASK2_IMAGE_LIST
        for sub in ("isic2018_task2", "")
        if archive_dir
    ]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    raise WorkflowError(
        "data.source rehearsal of isic2018_task2 needs the list of its training images (no "
        f"official CSV has it): set data.rehearsal.task2_image_list, or put {TASK2_IMAGE_LIST} "
        "into data.archive_dir (README.md, 'Rehearsal')."
    )


def rehearsal_row_files(dataset):
    """The official CSVs the rehearsal of `dataset` reads its rows from (task 2: the ISIC 2019
    and ISIC 2017 rows of its images, and its image list)."""
    if dataset == "isic2018_task2":
        return [
            f"{ARCHIVES}/{d}/{f}"
            for d in ("isic2019", "isic2017")
            for f in fetched_files(d)
        ] + [task2_image_list()]
    return [f"{ARCHIVES}/{dataset}/{f}" for f in fetched_files(dataset)]


def rehearsal_row_input(dataset):
    """rehearsal_row_files as an input function: the task-2 list is looked for only when its
    job is wanted."""
    return lambda wildcards: rehearsal_row_files(dataset)


def archive_files(dataset):
    """The official files (or, for the archive melanomas, the isic-cli folder) of `dataset`."""
    if dataset == "isic_archive_melanoma":
        return [MELANOMA_FOLDER]
    return [f"{ARCHIVES}/{dataset}/{name}" for name in LAYOUTS[dataset].files()]


def workflow_snakefile():
    """This workflow's Snakefile for a sub-run of Snakemake (draw_rulegraph): its path, or for
    a remote module its address (Snakemake fetches a URL given as --snakefile, with the rule
    files it includes; a token in it is left out)."""
    if WORKFLOW_ROOT is None:
        return RULES_BASEDIR.join("../../Snakefile").get_path_or_uri(secret_free=True)
    return workflow_file("Snakefile")


def pinned_melanoma_ids(wildcards=None):
    """The pinned isic_id list of the archive melanomas (data.archive_melanomas.ids) for a real
    run's download and ingest of isic_archive_melanoma; nothing otherwise. A path that exists
    from the working directory is the user's own list, else it is one shipped in config/.
    """
    dataset = getattr(wildcards, "dataset", "isic_archive_melanoma")
    if SOURCE != "isic" or dataset != "isic_archive_melanoma":
        return []
    path = config["data"]["archive_melanomas"]["ids"]
    return [
        path if Path(path).is_absolute() or Path(path).exists() else workflow_file(path)
    ]


def archive_inputs(dataset):
    """What ingest depends on: the archive files, plus the generator's truth (synthetic twin,
    written in the same job) or the checksum verification stamp (official archives).

    Accepts a dataset key or a `wildcards` object with a `dataset` attribute.
    """
    dataset = getattr(dataset, "dataset", dataset)
    if SOURCE == "synthetic":
        return [f"{ARCHIVES}/{dataset}/{name}" for name in LAYOUTS[dataset].files()] + [
            f"{ARCHIVES}/{dataset}/synthetic_truth/truth.csv"
        ]
    return archive_files(dataset) + [f"{ARCHIVES}/{dataset}/verified.json"]


def paper_tables(paper):
    """The table CSVs of a paper (what the scorecard reads)."""
    return [
        p
        for p in ARTIFACTS.get(paper, [])
        if Path(p).parent.name == "tables" and p.endswith(".csv")
    ]


def manifest(dataset):
    return f"results/data/{dataset}/manifest.parquet"


def split_file(dataset, name):
    return f"results/data/{dataset}/splits/{name}.parquet"


def check_shards(dataset):
    return [
        f"results/data/{dataset}/checks/shard-{k:03d}.parquet"
        for k in range(n_shards(dataset))
    ]


def cache_shards(dataset, res):
    """The image-cache shard files of `dataset` at working resolution `res` (sqN, maxN, orig)."""
    return [
        f"results/data/{dataset}/cache/{res}/shard-{k:03d}.npz"
        for k in range(n_shards(dataset))
    ]


def run_info_params():
    """What every script passes to melrepro.report.runinfo.write_run_info."""
    return {
        "data_source": SOURCE,
        "seed": config["seed"],
        "pretrained": config["pretrained"],
        "device": config["device"],
    }


# ---- seeds of the CNN papers: n_seeds trainings per model (melrepro.report.seeds) ----


def seed_folders(folder, paper_config):
    """The folders of one model's trainings: ``folder`` (seed index 0, the global seed), then
    ``folder/seed-<i>`` for the paper's further seeds (``n_seeds`` in all)."""
    n_seeds = int(paper_config.get("n_seeds", 1))
    return [folder] + [f"{folder}/seed-{i}" for i in range(1, n_seeds)]


def effnet_ham_seed_folders(variant):
    """effnet_ham (EFFNET_* in effnet_ham.smk): the training folders of ``variant``: its seeds (``n_seeds``); the control trains once."""
    return seed_folders(
        f"{EFFNET_HAM_DIR}/models/{variant}",
        EFFNET_HAM if variant in EFFNET_HAM_VARIANTS else {},
    )


def seed_run_info(wildcards):
    """run_info_params() of the training with seed index ``wildcards.seed``."""
    return {
        **run_info_params(),
        "seed": training_seed(config["seed"], int(wildcards.seed)),
    }


def get_final_output():
    """The default target: data artifacts, every active paper's artifacts and the scorecard."""
    targets = [
        "results/data/tables/class_counts.csv",
        "results/data/figures/class_counts.png",
    ]
    targets += [manifest(d) for d in active_datasets()]
    for paper in active_papers():
        targets += ARTIFACTS.get(paper, [])
        if ARTIFACTS.get(paper):
            targets.append(f"results/scorecard/{paper}.csv")
    targets.append("results/scorecard/summary.md")
    targets += REPORT_TARGETS
    targets += [f"{folder}/run_info.json" for folder in SHARED_OUTPUT_FOLDERS]
    if "effnet_ham" not in active_papers():
        targets.remove("results/effnet_ham/figures/run_info.json")
    if "siim2020" not in active_papers():
        targets.remove("results/siim2020/figures/run_info.json")
        targets.remove("results/siim2020/submission/run_info.json")
    return targets


# ---- effnet_ham input functions (EFFNET_HAM and EFFNET_HAM_TRUTH come from effnet_ham.smk) ----


def effnet_ham_overrides(variant):
    """The variant's recipe changes; the label-shuffled control trains like Baseline 2 (none)."""
    if variant == EFFNET_HAM_CONTROL:
        return {}
    return EFFNET_HAM["variants"][variant].get("overrides", {})


def effnet_ham_label(variant):
    if variant == EFFNET_HAM_CONTROL:
        return "Baseline 2 (label-shuffled control)"
    return EFFNET_HAM["variants"][variant]["label"]


def effnet_ham_cache(wildcards):
    """Cache shards at the resolution whose centre crop is the variant's image size."""
    recipe = {**EFFNET_HAM["recipe"], **effnet_ham_overrides(wildcards.variant)}
    side = math.ceil(recipe["image_size"] * EFFNET_HAM["aspect_ratio"])
    return cache_shards("isic2018_task3", f"max{side}")


def effnet_ham_truth():
    """The synthetic twin's truth (lesion masks for fig06); nothing on real data."""
    return [f"{EFFNET_HAM_TRUTH}/truth.csv"] if SOURCE == "synthetic" else []


# ---- gradcam_overlap input functions (GRADCAM and GRADCAM_DIR come from gradcam_overlap.smk) ----


def gradcam_spec(model):
    """A model's config entry; a label-shuffled control (GRADCAM_CONTROLS) takes its model's."""
    return GRADCAM["models"][GRADCAM_CONTROLS.get(model, model)]


def gradcam_model(wildcards):
    return gradcam_spec(wildcards.model)


def gradcam_settings(model):
    """TrainOptions keys (and augment, class_weighting, shuffle_train_labels) of one model:
    train + model overrides; a control also shuffles its training labels."""
    spec = gradcam_spec(model)
    keys = {"backbone": spec["backbone"], "image_size": spec["image_size"]}
    if model in GRADCAM_CONTROLS:
        keys["shuffle_train_labels"] = True
    return sorted_params({**GRADCAM["train"], **spec.get("train", {}), **keys})


def gradcam_cache(wildcards):
    return cache_shards("isic2019", f"sq{gradcam_model(wildcards)['image_size']}")


def gradcam_grid(model):
    h, w = gradcam_spec(model)["grid"]
    return f"g{h}x{w}"


def gradcam_shards(model, kind):
    folder = f"{GRADCAM_DIR}/overlap/{model}"
    suffix = "npz" if kind == "maps" else "parquet"
    return [
        f"{folder}/{kind}-{k:03d}.{suffix}" for k in range(n_shards("isic2018_task2"))
    ]


# ---- siim2020 input functions (SIIM, SIIM_DIR, SIIM_MODELS... come from siim2020.smk) ----


def siim_trainings():
    """(protocol, model, dataset) of every training: 3 x 4 under patient, the configured models
    under author_code."""
    out = [("patient", m, d) for m in SIIM_MODELS for d in SIIM_DATASETS]
    if "author_code" in SIIM_PROTOCOLS:
        out += [
            ("author_code", m, d)
            for m in SIIM.get("author_code_models", ["base"])
            for d in SIIM_DATASETS
        ]
    if SIIM.get("label_shuffled_control", False):
        out.append(("patient", SIIM_CONTROL_MODEL, "all"))
    return out


def siim_model_dir(protocol, model, dataset):
    return f"{SIIM_DIR}/models/{protocol}/{model}/{dataset}"


def siim_prepared(kind):
    """The prepared-image shards (kind images) or their brightness tables (kind brightness)."""
    ext = "npz" if kind == "images" else "parquet"
    return [
        f"{SIIM_DIR}/prepared/{kind}-{k:03d}.{ext}" for k in range(n_shards("isic2020"))
    ]


def siim_model_files(model, name, protocol="patient"):
    return [f"{siim_model_dir(protocol, model, d)}/{name}" for d in SIIM_DATASETS]


# ---- torchvision weights for offline compute nodes (rule in weights.smk) ----
TORCH_HOME = "resources/torch_home"
# Set here, at parse time, so local jobs inherit it and SLURM jobs (which re-read this file) too.
os.environ.update({"TORCH_HOME": os.path.abspath(TORCH_HOME)})


def torchvision_weights(model):
    """The marker of ``model``'s fetched ImageNet weights, or [] when pretrained is off."""
    return [f"{TORCH_HOME}/{model}.json"] if config.get("pretrained") else []
