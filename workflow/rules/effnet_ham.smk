# effnet_ham (paper 003): EfficientNet-B0, malignant vs benign on ISIC 2018 task 3 (HAM10000).
# Each table01 row is a {variant} of one recipe (config effnet_ham.recipe + variants.<v>.overrides).

import os

EFFNET_HAM = config.get("effnet_ham", {})
EFFNET_HAM_VARIANTS = list(EFFNET_HAM.get("variants", {}))
# The label-shuffled control (label_shuffled_control): Baseline 2 on permuted training labels.
EFFNET_HAM_CONTROL = "label_shuffled"
EFFNET_HAM_TRAINED = EFFNET_HAM_VARIANTS + (
    [EFFNET_HAM_CONTROL] if EFFNET_HAM.get("label_shuffled_control", False) else []
)


EFFNET_HAM_FIG = EFFNET_HAM.get("figures_variant", "baseline2")
if EFFNET_HAM and EFFNET_HAM_FIG not in EFFNET_HAM_VARIANTS:
    raise WorkflowError(
        f"config effnet_ham.figures_variant is {EFFNET_HAM_FIG!r}: expected one of the "
        f"variants under effnet_ham.variants ({', '.join(EFFNET_HAM_VARIANTS)})"
    )
EFFNET_HAM_DIR = "results/effnet_ham"
EFFNET_HAM_SPLIT = split_file("isic2018_task3", "lesion_70_15_15")
EFFNET_HAM_TRUTH = "resources/archives/isic2018_task3/synthetic_truth"
# HAM10000 lesion segmentations (written by the twin too): the lesion masks of fig06.
EFFNET_HAM_SEGMENTATIONS = (
    f"{ARCHIVES}/isic2018_task3/HAM10000_segmentations_lesion_tschandl.zip"
)

ARTIFACTS["effnet_ham"] = (
    [
        f"{EFFNET_HAM_DIR}/tables/table01.csv",
        *[
            f"{EFFNET_HAM_DIR}/figures/{fig}.png"
            for fig in ("fig01", "fig02", "fig03", "fig04", "fig05", "fig06")
        ],
    ]
    if EFFNET_HAM
    else []
)


# Input functions (effnet_ham_overrides, effnet_ham_cache, effnet_ham_truth) live in common.smk.


if EFFNET_HAM:

    rule train_effnet_ham:
        input:
            manifest=manifest("isic2018_task3"),
            split=EFFNET_HAM_SPLIT,
            cache=effnet_ham_cache,
            weights=torchvision_weights(EFFNET_HAM["recipe"]["backbone"]),
        output:
            model=f"{EFFNET_HAM_DIR}/models/{{variant}}/model.pt",
            history=f"{EFFNET_HAM_DIR}/models/{{variant}}/history.csv",
            predictions=f"{EFFNET_HAM_DIR}/models/{{variant}}/predictions.parquet",
            metrics=f"{EFFNET_HAM_DIR}/models/{{variant}}/metrics.json",
            run_info=f"{EFFNET_HAM_DIR}/models/{{variant}}/run_info.json",
        log:
            "logs/train_effnet_ham/{variant}.log",
        benchmark:
            "benchmarks/results/train_effnet_ham/{variant}.tsv"
        wildcard_constraints:
            variant="|".join(EFFNET_HAM_TRAINED),
        conda:
            "../../envs/torch.yaml"
        threads: EFFNET_HAM["threads"]
        resources:
            mem_mb=grows_with_attempt(EFFNET_HAM["mem_mb"]),
            runtime=grows_with_attempt(EFFNET_HAM["runtime"]),
            gpu=JOB_GPUS,
        params:
            recipe=EFFNET_HAM["recipe"],
            overrides=lambda wc: effnet_ham_overrides(wc.variant),
            label_shuffled=lambda wc: wc.variant == EFFNET_HAM_CONTROL,
            malignant_labels=EFFNET_HAM["malignant_labels"],
            # Not an output: Snakemake must not delete checkpoints when a job is killed.
            checkpoint_dir=lambda wc: f"{EFFNET_HAM_DIR}/checkpoints/{wc.variant}",
            loader_workers=EFFNET_HAM["loader_workers"],
            augment_on=EFFNET_HAM["augment_on"],
            n_bootstrap=EFFNET_HAM["n_bootstrap"],
            run_info=run_info_params(),
        script:
            "../../scripts/train_effnet_ham.py"

    # Seeds 1..n_seeds-1 of a variant (seed 0 is the rule above): seed-<i>/ under its folder.
    use rule train_effnet_ham as train_effnet_ham_seed with:
        output:
            model=f"{EFFNET_HAM_DIR}/models/{{variant}}/seed-{{seed}}/model.pt",
            history=f"{EFFNET_HAM_DIR}/models/{{variant}}/seed-{{seed}}/history.csv",
            predictions=f"{EFFNET_HAM_DIR}/models/{{variant}}/seed-{{seed}}/predictions.parquet",
            metrics=f"{EFFNET_HAM_DIR}/models/{{variant}}/seed-{{seed}}/metrics.json",
            run_info=f"{EFFNET_HAM_DIR}/models/{{variant}}/seed-{{seed}}/run_info.json",
        log:
            "logs/train_effnet_ham/{variant}/seed-{seed}.log",
        benchmark:
            "benchmarks/results/train_effnet_ham/{variant}/seed-{seed}.tsv"
        wildcard_constraints:
            variant="|".join(EFFNET_HAM_VARIANTS),
            seed=r"[1-9]\d*",
        params:
            checkpoint_dir=lambda wc: f"{EFFNET_HAM_DIR}/checkpoints/{wc.variant}/seed-{wc.seed}",
            run_info=seed_run_info,

    rule tabulate_effnet_ham:
        input:
            metrics=[
                f"{folder}/metrics.json"
                for v in EFFNET_HAM_TRAINED
                for folder in effnet_ham_seed_folders(v)
            ],
        output:
            table=report(
                f"{EFFNET_HAM_DIR}/tables/table01.csv",
                caption="../report/effnet_ham_table01.rst",
                category="effnet_ham",
            ),
            markdown=f"{EFFNET_HAM_DIR}/tables/table01.md",
            run_info=f"{EFFNET_HAM_DIR}/tables/run_info.json",
        log:
            "logs/tabulate_effnet_ham/table01.log",
        benchmark:
            "benchmarks/results/tabulate_effnet_ham/table01.tsv"
        conda:
            "../../envs/report.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        params:
            # one label per metrics file: a variant's seeds share its label
            labels=[
                effnet_ham_label(v)
                for v in EFFNET_HAM_TRAINED
                for _ in effnet_ham_seed_folders(v)
            ],
            validation_rows=[
                EFFNET_HAM["variants"][v]["label"]
                for v in EFFNET_HAM_VARIANTS
                if EFFNET_HAM["variants"][v].get("validation_row", False)
            ],
            run_info=run_info_params(),
        script:
            "../../scripts/tabulate_effnet_ham.py"

    rule plot_effnet_ham_class_distribution:
        input:
            manifest=manifest("isic2018_task3"),
            split=EFFNET_HAM_SPLIT,
        output:
            figure=report(
                f"{EFFNET_HAM_DIR}/figures/fig01.png",
                caption="../report/effnet_ham_fig01.rst",
                category="effnet_ham",
            ),
            pdf=f"{EFFNET_HAM_DIR}/figures/fig01.pdf",
        log:
            "logs/plot_effnet_ham_class_distribution/fig01.log",
        benchmark:
            "benchmarks/results/plot_effnet_ham_class_distribution/fig01.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        params:
            malignant_labels=EFFNET_HAM["malignant_labels"],
        script:
            "../../scripts/plot_effnet_ham_class_distribution.py"

    rule plot_effnet_ham_loss:
        input:
            history=f"{EFFNET_HAM_DIR}/models/{EFFNET_HAM_FIG}/history.csv",
        output:
            figure=report(
                f"{EFFNET_HAM_DIR}/figures/fig02.png",
                caption="../report/effnet_ham_fig02.rst",
                category="effnet_ham",
            ),
            pdf=f"{EFFNET_HAM_DIR}/figures/fig02.pdf",
        log:
            "logs/plot_effnet_ham_loss/fig02.log",
        benchmark:
            "benchmarks/results/plot_effnet_ham_loss/fig02.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        script:
            "../../scripts/plot_effnet_ham_loss.py"

    rule plot_effnet_ham_confusion:
        input:
            predictions=f"{EFFNET_HAM_DIR}/models/{EFFNET_HAM_FIG}/predictions.parquet",
        output:
            figure=report(
                f"{EFFNET_HAM_DIR}/figures/fig03.png",
                caption="../report/effnet_ham_fig03.rst",
                category="effnet_ham",
            ),
            pdf=f"{EFFNET_HAM_DIR}/figures/fig03.pdf",
        log:
            "logs/plot_effnet_ham_confusion/fig03.log",
        benchmark:
            "benchmarks/results/plot_effnet_ham_confusion/fig03.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        script:
            "../../scripts/plot_effnet_ham_confusion.py"

    rule compute_effnet_ham_gradcam:
        input:
            model=f"{EFFNET_HAM_DIR}/models/{{variant}}/model.pt",
            predictions=f"{EFFNET_HAM_DIR}/models/{{variant}}/predictions.parquet",
            manifest=manifest("isic2018_task3"),
            split=EFFNET_HAM_SPLIT,
            cache=effnet_ham_cache,
            truth=effnet_ham_truth(),
            segmentations=EFFNET_HAM_SEGMENTATIONS,
        output:
            maps=f"{EFFNET_HAM_DIR}/gradcam/{{variant}}/examples.npz",
            table=f"{EFFNET_HAM_DIR}/gradcam/{{variant}}/saliency.csv",
            summary=f"{EFFNET_HAM_DIR}/gradcam/{{variant}}/summary.json",
        log:
            "logs/compute_effnet_ham_gradcam/{variant}.log",
        benchmark:
            "benchmarks/results/compute_effnet_ham_gradcam/{variant}.tsv"
        wildcard_constraints:
            variant="|".join(EFFNET_HAM_VARIANTS),
        conda:
            "../../envs/torch.yaml"
        threads: EFFNET_HAM["threads"]
        resources:
            mem_mb=grows_with_attempt(EFFNET_HAM["mem_mb"]),
            # Grad-CAM of the test images runs on the CPU (minutes): no GPU slot held idle.
            runtime=grows_with_attempt(60),
        params:
            recipe=EFFNET_HAM["recipe"],
            overrides=lambda wc: effnet_ham_overrides(wc.variant),
            malignant_labels=EFFNET_HAM["malignant_labels"],
            truth_dir=lambda wc, input: (
                os.path.dirname(input.truth[0]) if input.truth else None
            ),
            archive_dir=lambda wc, input: os.path.dirname(input.segmentations),
            region=EFFNET_HAM["gradcam"]["region"],
            target_layer=EFFNET_HAM["gradcam"]["target_layer"],
            border_width=EFFNET_HAM["gradcam"]["border_width"],
            n_examples=EFFNET_HAM["gradcam"]["n_examples"],
        script:
            "../../scripts/compute_effnet_ham_gradcam.py"

    rule plot_effnet_ham_gradcam_examples:
        input:
            maps=f"{EFFNET_HAM_DIR}/gradcam/{EFFNET_HAM_FIG}/examples.npz",
            table=f"{EFFNET_HAM_DIR}/gradcam/{EFFNET_HAM_FIG}/saliency.csv",
        output:
            figure=report(
                f"{EFFNET_HAM_DIR}/figures/fig05.png",
                caption="../report/effnet_ham_fig05.rst",
                category="effnet_ham",
            ),
            pdf=f"{EFFNET_HAM_DIR}/figures/fig05.pdf",
        log:
            "logs/plot_effnet_ham_gradcam_examples/fig05.log",
        benchmark:
            "benchmarks/results/plot_effnet_ham_gradcam_examples/fig05.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        script:
            "../../scripts/plot_effnet_ham_gradcam_examples.py"

    rule plot_effnet_ham_gradcam_outside:
        input:
            maps=f"{EFFNET_HAM_DIR}/gradcam/{EFFNET_HAM_FIG}/examples.npz",
            table=f"{EFFNET_HAM_DIR}/gradcam/{EFFNET_HAM_FIG}/saliency.csv",
        output:
            figure=report(
                f"{EFFNET_HAM_DIR}/figures/fig06.png",
                caption="../report/effnet_ham_fig06.rst",
                category="effnet_ham",
            ),
            pdf=f"{EFFNET_HAM_DIR}/figures/fig06.pdf",
        log:
            "logs/plot_effnet_ham_gradcam_outside/fig06.log",
        benchmark:
            "benchmarks/results/plot_effnet_ham_gradcam_outside/fig06.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        script:
            "../../scripts/plot_effnet_ham_gradcam_outside.py"
