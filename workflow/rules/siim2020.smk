# siim2020 (paper 002): patient-aware small dataset, ResNet18 + metadata, sex and brightness experts.
# prepare (per cache shard) -> datasets (per protocol) -> train (protocol x model x dataset) ->
# table01, table02, figures, submission.

SIIM = config.get("siim2020", {})
SIIM_DIR = "results/siim2020"
SIIM_DATASETS = ["all", "small", "small3aug", "small5aug"]
SIIM_MODELS = ["base", "sex", "brightness"]
# The label-shuffled control: Base All on permuted training labels (label_shuffled_control).
SIIM_CONTROL_MODEL = "base_shuffled"
SIIM_PROTOCOLS = SIIM.get("protocols", ["patient"])
SIIM_SPLIT = split_file("isic2020", "patient_85_15")
SIIM_TEST_CSV = "resources/archives/isic2020/ISIC_2020_Test_Metadata.csv"


# Input functions (siim_trainings, siim_model_dir, siim_prepared, siim_model_files) live in
# common.smk.


SIIM_FIGURES = [
    "fig02",
    "fig03",
    "fig04",
    "fig08",
    "fig09",
    "fig10",
    "fig11",
    "fig12",
    "fig13",
    "fig14",
    "fig15",
    "fig16",
    "fig17",
]
ARTIFACTS["siim2020"] = (
    [
        f"{SIIM_DIR}/tables/table01.csv",
        f"{SIIM_DIR}/tables/table02.csv",
        *[f"{SIIM_DIR}/figures/{fig}.png" for fig in SIIM_FIGURES],
        f"{SIIM_DIR}/submission/submission.csv",
    ]
    if SIIM
    else []
)
# Loss panels (fig08/14/15) and ROC curves (fig09/16/17) of each model, on the patient protocol.
SIIM_LOSS_FIGURES = {"fig08": "base", "fig14": "sex", "fig15": "brightness"}
SIIM_ROC_FIGURES = {"fig09": "base", "fig16": "brightness", "fig17": "sex"}
SIIM_DATA_FIGURES = ["fig02", "fig03", "fig04", "fig13"]


if SIIM:

    rule prepare_siim2020_images:
        input:
            cache=f"results/data/isic2020/cache/{SIIM['cache_res']}/shard-{{shard}}.npz",
        output:
            images=f"{SIIM_DIR}/prepared/images-{{shard}}.npz",
            brightness=f"{SIIM_DIR}/prepared/brightness-{{shard}}.parquet",
        log:
            "logs/prepare_siim2020_images/{shard}.log",
        benchmark:
            "benchmarks/results/prepare_siim2020_images/{shard}.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        params:
            jpeg_quality=SIIM["jpeg_quality"],
        script:
            "../../scripts/prepare_siim2020_images.py"

    rule build_siim2020_datasets:
        input:
            manifest=manifest("isic2020"),
            split=SIIM_SPLIT,
            brightness=siim_prepared("brightness"),
        output:
            rows=f"{SIIM_DIR}/datasets/{{protocol}}/rows.parquet",
            counts=f"{SIIM_DIR}/datasets/{{protocol}}/counts.json",
        log:
            "logs/build_siim2020_datasets/{protocol}.log",
        benchmark:
            "benchmarks/results/build_siim2020_datasets/{protocol}.tsv"
        wildcard_constraints:
            protocol="patient|author_code",
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            seed=config["seed"],
            benign_per_patient=SIIM["benign_per_patient"],
            copies=sorted_params(SIIM["copies"]),
            author_code=sorted_params(SIIM["author_code"]),
        script:
            "../../scripts/build_siim2020_datasets.py"

    rule train_siim2020:
        input:
            manifest=manifest("isic2020"),
            rows=f"{SIIM_DIR}/datasets/{{protocol}}/rows.parquet",
            counts=f"{SIIM_DIR}/datasets/{{protocol}}/counts.json",
            images=siim_prepared("images"),
            weights=torchvision_weights("resnet18"),
        output:
            model=f"{SIIM_DIR}/models/{{protocol}}/{{model}}/{{dataset}}/model.pt",
            history=f"{SIIM_DIR}/models/{{protocol}}/{{model}}/{{dataset}}/history.csv",
            predictions=f"{SIIM_DIR}/models/{{protocol}}/{{model}}/{{dataset}}/predictions.parquet",
            metrics=f"{SIIM_DIR}/models/{{protocol}}/{{model}}/{{dataset}}/metrics.json",
            run_info=f"{SIIM_DIR}/models/{{protocol}}/{{model}}/{{dataset}}/run_info.json",
        log:
            "logs/train_siim2020/{protocol}/{model}/{dataset}.log",
        benchmark:
            "benchmarks/results/train_siim2020/{protocol}/{model}/{dataset}.tsv"
        wildcard_constraints:
            protocol="patient|author_code",
            model="|".join([*SIIM_MODELS, SIIM_CONTROL_MODEL]),
            dataset="|".join(SIIM_DATASETS),
        conda:
            "../../envs/torch.yaml"
        threads: SIIM["threads"]
        resources:
            mem_mb=grows_with_attempt(SIIM["mem_mb"]),
            runtime=grows_with_attempt(SIIM["runtime"]),
            gpu=JOB_GPUS,
        params:
            train=sorted_params(SIIM["train"]),
            head=sorted_params(SIIM["head"]),
            augment=sorted_params(SIIM["augment"]),
            sites=SIIM["sites"],
            tpr_range=SIIM["tpr_range"],
            # Not an output: Snakemake must not delete checkpoints when a job is killed.
            checkpoint_dir=lambda wc: f"{SIIM_DIR}/checkpoints/{wc.protocol}/{wc.model}/{wc.dataset}",
            run_info=run_info_params(),
        script:
            "../../scripts/train_siim2020.py"

    # Seeds 1..n_seeds-1 of a training (seed 0 is the rule above): seed-<i>/ under its folder.
    use rule train_siim2020 as train_siim2020_seed with:
        output:
            model=f"{SIIM_DIR}/models/{{protocol}}/{{model}}/{{dataset}}/seed-{{seed}}/model.pt",
            history=f"{SIIM_DIR}/models/{{protocol}}/{{model}}/{{dataset}}/seed-{{seed}}/history.csv",
            predictions=f"{SIIM_DIR}/models/{{protocol}}/{{model}}/{{dataset}}/seed-{{seed}}/predictions.parquet",
            metrics=f"{SIIM_DIR}/models/{{protocol}}/{{model}}/{{dataset}}/seed-{{seed}}/metrics.json",
            run_info=f"{SIIM_DIR}/models/{{protocol}}/{{model}}/{{dataset}}/seed-{{seed}}/run_info.json",
        log:
            "logs/train_siim2020/{protocol}/{model}/{dataset}/seed-{seed}.log",
        benchmark:
            "benchmarks/results/train_siim2020/{protocol}/{model}/{dataset}/seed-{seed}.tsv"
        wildcard_constraints:
            protocol="patient|author_code",
            model="|".join(SIIM_MODELS),
            dataset="|".join(SIIM_DATASETS),
            seed=r"[1-9]\d*",
        params:
            checkpoint_dir=lambda wc: f"{SIIM_DIR}/checkpoints/{wc.protocol}/{wc.model}/{wc.dataset}/seed-{wc.seed}",
            run_info=seed_run_info,

    rule tabulate_siim2020:
        input:
            metrics=[
                f"{folder}/metrics.json"
                for t in siim_trainings()
                for folder in seed_folders(siim_model_dir(*t), SIIM)
            ],
            counts=expand(
                f"{SIIM_DIR}/datasets/{{protocol}}/counts.json",
                protocol=SIIM_PROTOCOLS,
            ),
            # the reference row: logistic regression on age, sex and mean colour
            manifest=manifest("isic2020"),
            rows=f"{SIIM_DIR}/datasets/patient/rows.parquet",
            brightness=siim_prepared("brightness"),
        output:
            table01=report(
                f"{SIIM_DIR}/tables/table01.csv",
                caption="../report/siim2020_table01.rst",
                category="siim2020",
            ),
            table02=report(
                f"{SIIM_DIR}/tables/table02.csv",
                caption="../report/siim2020_table02.rst",
                category="siim2020",
            ),
            run_info=f"{SIIM_DIR}/tables/run_info.json",
        log:
            "logs/tabulate_siim2020/tables.log",
        benchmark:
            "benchmarks/results/tabulate_siim2020/tables.tsv"
        conda:
            "../../envs/report.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        params:
            tpr_range=SIIM["tpr_range"],
            run_info=run_info_params(),
        script:
            "../../scripts/tabulate_siim2020.py"

    rule plot_siim2020_data:
        input:
            manifest=manifest("isic2020"),
            brightness=siim_prepared("brightness"),
            images=siim_prepared("images"),
        output:
            figure=report(
                f"{SIIM_DIR}/figures/{{figure}}.png",
                caption="../report/siim2020_figures.rst",
                category="siim2020",
            ),
            pdf=f"{SIIM_DIR}/figures/{{figure}}.pdf",
        log:
            "logs/plot_siim2020_data/{figure}.log",
        benchmark:
            "benchmarks/results/plot_siim2020_data/{figure}.tsv"
        wildcard_constraints:
            figure="|".join(SIIM_DATA_FIGURES),
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            seed=config["seed"],
            n_random=SIIM["n_random_swatches"],
            n_extremes=SIIM["n_extremes"],
        script:
            "../../scripts/plot_siim2020_data.py"

    rule plot_siim2020_loss:
        input:
            histories=lambda wc: siim_model_files(
                SIIM_LOSS_FIGURES[wc.figure], "history.csv"
            ),
        output:
            figure=report(
                f"{SIIM_DIR}/figures/{{figure}}.png",
                caption="../report/siim2020_figures.rst",
                category="siim2020",
            ),
            pdf=f"{SIIM_DIR}/figures/{{figure}}.pdf",
        log:
            "logs/plot_siim2020_loss/{figure}.log",
        benchmark:
            "benchmarks/results/plot_siim2020_loss/{figure}.tsv"
        wildcard_constraints:
            figure="|".join(SIIM_LOSS_FIGURES),
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        params:
            model=lambda wc: SIIM_LOSS_FIGURES[wc.figure],
        script:
            "../../scripts/plot_siim2020_results.py"

    rule plot_siim2020_roc:
        input:
            predictions=lambda wc: siim_model_files(
                SIIM_ROC_FIGURES[wc.figure], "predictions.parquet"
            ),
        output:
            figure=report(
                f"{SIIM_DIR}/figures/{{figure}}.png",
                caption="../report/siim2020_figures.rst",
                category="siim2020",
            ),
            pdf=f"{SIIM_DIR}/figures/{{figure}}.pdf",
        log:
            "logs/plot_siim2020_roc/{figure}.log",
        benchmark:
            "benchmarks/results/plot_siim2020_roc/{figure}.tsv"
        wildcard_constraints:
            figure="|".join(SIIM_ROC_FIGURES),
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        params:
            model=lambda wc: SIIM_ROC_FIGURES[wc.figure],
        script:
            "../../scripts/plot_siim2020_results.py"

    rule plot_siim2020_confusion:
        input:
            predictions=siim_model_files("base", "predictions.parquet"),
            metrics=siim_model_files("base", "metrics.json"),
        output:
            figure=report(
                f"{SIIM_DIR}/figures/fig10.png",
                caption="../report/siim2020_fig10.rst",
                category="siim2020",
            ),
            pdf=f"{SIIM_DIR}/figures/fig10.pdf",
        log:
            "logs/plot_siim2020_confusion/fig10.log",
        benchmark:
            "benchmarks/results/plot_siim2020_confusion/fig10.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        params:
            model="base",
        script:
            "../../scripts/plot_siim2020_results.py"

    rule plot_siim2020_examples:
        input:
            predictions=f"{siim_model_dir('patient', 'base', 'small')}/predictions.parquet",
            images=siim_prepared("images"),
        output:
            figure=report(
                f"{SIIM_DIR}/figures/{{figure}}.png",
                caption="../report/siim2020_figures.rst",
                category="siim2020",
            ),
            pdf=f"{SIIM_DIR}/figures/{{figure}}.pdf",
        log:
            "logs/plot_siim2020_examples/{figure}.log",
        benchmark:
            "benchmarks/results/plot_siim2020_examples/{figure}.tsv"
        wildcard_constraints:
            figure="fig11|fig12",
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        params:
            kind=lambda wc: "tp" if wc.figure == "fig11" else "fn",
            n_examples=SIIM["n_examples"],
        script:
            "../../scripts/plot_siim2020_examples.py"

    rule write_siim2020_submission:
        input:
            predictions=f"{siim_model_dir('patient', 'base', 'small')}/predictions.parquet",
            test_metadata=SIIM_TEST_CSV,
        output:
            submission=report(
                f"{SIIM_DIR}/submission/submission.csv",
                caption="../report/siim2020_submission.rst",
                category="siim2020",
            ),
        log:
            "logs/write_siim2020_submission/submission.log",
        benchmark:
            "benchmarks/results/write_siim2020_submission/submission.tsv"
        conda:
            "../../envs/report.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        script:
            "../../scripts/write_siim2020_submission.py"
