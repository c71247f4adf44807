# gradcam_overlap (paper 004): Grad-CAM of VGG16 / ResNet50 (ISIC 2019) vs the ISIC 2018 task-2
# feature masks. {model} is a key of gradcam_overlap.models; per-image work is sharded by task-2 shard.

GRADCAM = config.get("gradcam_overlap", {})
GRADCAM_MODELS = list(GRADCAM.get("models", {}))
# label-shuffled control key -> its model (trained like it on permuted training labels)
GRADCAM_CONTROLS = {
    f"{m}_label_shuffled": m for m in GRADCAM.get("label_shuffled_control", [])
}
GRADCAM_TRAINED = GRADCAM_MODELS + list(GRADCAM_CONTROLS)
GRADCAM_DIR = "results/gradcam_overlap"
GRADCAM_SPLIT = split_file("isic2019", GRADCAM.get("split", "class_floor_80_10_10"))
GRADCAM_TABLES = [f"table{k:02d}" for k in range(7)]

ARTIFACTS["gradcam_overlap"] = (
    [
        *[f"{GRADCAM_DIR}/tables/{t}.csv" for t in GRADCAM_TABLES],
        *[f"{GRADCAM_DIR}/figures/fig{k:02d}.png" for k in range(1, 6)],
    ]
    if GRADCAM
    else []
)


# Input functions (gradcam_model, gradcam_settings, gradcam_cache, gradcam_grid, gradcam_shards)
# live in common.smk.


if GRADCAM:

    rule count_cells:
        input:
            manifest=manifest("isic2018_task2"),
            archives=archive_inputs("isic2018_task2"),
        output:
            shard="results/data/isic2018_task2/cellcounts/{grid}/shard-{shard}.npz",
        log:
            "logs/count_cells/{grid}/{shard}.log",
        benchmark:
            "benchmarks/results/count_cells/{grid}/{shard}.tsv"
        wildcard_constraints:
            grid=r"g\d+x\d+",
        conda:
            "../../envs/data.yaml"
        threads: 1
        resources:
            mem_mb=3000,
            runtime=60,
        params:
            folder=lambda wc: archive_folder("isic2018_task2"),
        script:
            "../../scripts/count_cells.py"

    rule train_gradcam_overlap:
        input:
            manifest=manifest("isic2019"),
            split=GRADCAM_SPLIT,
            cache=gradcam_cache,
            # ImageNet weights for offline nodes (weights.smk); empty unless pretrained.
            weights=lambda wc: torchvision_weights(gradcam_spec(wc.model)["backbone"]),
        output:
            model=f"{GRADCAM_DIR}/models/{{model}}/model.pt",
            history=f"{GRADCAM_DIR}/models/{{model}}/history.csv",
            predictions=f"{GRADCAM_DIR}/models/{{model}}/predictions.parquet",
            metrics=f"{GRADCAM_DIR}/models/{{model}}/metrics.json",
            run_info=f"{GRADCAM_DIR}/models/{{model}}/run_info.json",
        log:
            "logs/train_gradcam_overlap/{model}.log",
        benchmark:
            "benchmarks/results/train_gradcam_overlap/{model}.tsv"
        wildcard_constraints:
            model="|".join(GRADCAM_TRAINED),
        conda:
            "../../envs/torch.yaml"
        threads: GRADCAM["threads"]
        resources:
            mem_mb=grows_with_attempt(GRADCAM["mem_mb"]),
            runtime=grows_with_attempt(GRADCAM["runtime"]),
            gpu=JOB_GPUS,
        params:
            settings=lambda wc: gradcam_settings(wc.model),
            # Not an output: Snakemake must not delete checkpoints when a job is killed.
            checkpoint_dir=lambda wc: f"{GRADCAM_DIR}/checkpoints/{wc.model}",
            run_info=run_info_params(),
        script:
            "../../scripts/train_gradcam_overlap.py"

    # Seeds 1..n_seeds-1 of a classifier (seed 0 is the rule above, the one Grad-CAM reads).
    use rule train_gradcam_overlap as train_gradcam_overlap_seed with:
        output:
            model=f"{GRADCAM_DIR}/models/{{model}}/seed-{{seed}}/model.pt",
            history=f"{GRADCAM_DIR}/models/{{model}}/seed-{{seed}}/history.csv",
            predictions=f"{GRADCAM_DIR}/models/{{model}}/seed-{{seed}}/predictions.parquet",
            metrics=f"{GRADCAM_DIR}/models/{{model}}/seed-{{seed}}/metrics.json",
            run_info=f"{GRADCAM_DIR}/models/{{model}}/seed-{{seed}}/run_info.json",
        log:
            "logs/train_gradcam_overlap/{model}/seed-{seed}.log",
        benchmark:
            "benchmarks/results/train_gradcam_overlap/{model}/seed-{seed}.tsv"
        wildcard_constraints:
            model="|".join(GRADCAM_MODELS),
            seed=r"[1-9]\d*",
        params:
            checkpoint_dir=lambda wc: f"{GRADCAM_DIR}/checkpoints/{wc.model}/seed-{wc.seed}",
            run_info=seed_run_info,

    rule join_gradcam_overlap:
        input:
            task2=manifest("isic2018_task2"),
            isic2019=manifest("isic2019"),
            split=GRADCAM_SPLIT,
            # labels of task-2 images that ISIC 2019 lacks (ISIC_0015982, a 2017 test nevus)
            isic2017=manifest("isic2017"),
        output:
            join=f"{GRADCAM_DIR}/join.parquet",
        log:
            "logs/join_gradcam_overlap/join.log",
        benchmark:
            "benchmarks/results/join_gradcam_overlap/join.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../../scripts/join_gradcam_overlap.py"

    rule compute_gradcam_overlap:
        input:
            join=f"{GRADCAM_DIR}/join.parquet",
            model=f"{GRADCAM_DIR}/models/{{model}}/model.pt",
            metrics=f"{GRADCAM_DIR}/models/{{model}}/metrics.json",
            cache=gradcam_cache,
            cells=lambda wc: f"results/data/isic2018_task2/cellcounts/{gradcam_grid(wc.model)}/shard-{wc.shard}.npz",
            # images without an ISIC 2019 copy are read from the task-2 archive
            archives=archive_inputs("isic2018_task2"),
        output:
            maps=f"{GRADCAM_DIR}/overlap/{{model}}/maps-{{shard}}.npz",
            table=f"{GRADCAM_DIR}/overlap/{{model}}/jaccard-{{shard}}.parquet",
        log:
            "logs/compute_gradcam_overlap/{model}/{shard}.log",
        benchmark:
            "benchmarks/results/compute_gradcam_overlap/{model}/{shard}.tsv"
        wildcard_constraints:
            model="|".join(GRADCAM_TRAINED),
        conda:
            "../../envs/torch.yaml"
        threads: GRADCAM["threads"]
        resources:
            mem_mb=grows_with_attempt(GRADCAM["gradcam_mem_mb"]),
            runtime=grows_with_attempt(120),
        params:
            layer=lambda wc: gradcam_model(wc)["layer"],
            grid=lambda wc: gradcam_model(wc)["grid"],
            batch_size=GRADCAM["gradcam_batch_size"],
            task2_archive=lambda wc: archive_folder("isic2018_task2"),
        script:
            "../../scripts/compute_gradcam_overlap.py"

    rule tabulate_gradcam_overlap:
        input:
            predictions=expand(
                f"{GRADCAM_DIR}/models/{{model}}/predictions.parquet",
                model=GRADCAM_TRAINED,
            ),
            tables=[t for m in GRADCAM_TRAINED for t in gradcam_shards(m, "jaccard")],
            # the further seeds' classifiers: table00 only (Grad-CAM reads the first seed's)
            seed_predictions=[
                f"{folder}/predictions.parquet"
                for m in GRADCAM_MODELS
                for folder in seed_folders(f"{GRADCAM_DIR}/models/{m}", GRADCAM)[1:]
            ],
            paper_values=workflow_file("config/paper_values/gradcam_overlap.csv"),
        output:
            tables=[
                report(
                    f"{GRADCAM_DIR}/tables/{t}.csv",
                    caption=f"../report/gradcam_overlap_{t}.rst",
                    category="gradcam_overlap",
                )
                for t in GRADCAM_TABLES
            ],
            supplements=[
                f"{GRADCAM_DIR}/tables/{t}_test.csv" for t in GRADCAM_TABLES[2:]
            ],
            fig_csv=[
                f"{GRADCAM_DIR}/tables/fig04.csv",
                f"{GRADCAM_DIR}/tables/fig05.csv",
            ],
            run_info=f"{GRADCAM_DIR}/tables/run_info.json",
        log:
            "logs/tabulate_gradcam_overlap/tables.log",
        benchmark:
            "benchmarks/results/tabulate_gradcam_overlap/tables.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            models=GRADCAM_TRAINED,
            labels={m: GRADCAM["models"][m]["label"] for m in GRADCAM_MODELS},
            controls=GRADCAM_CONTROLS,
            n_shards=n_shards("isic2018_task2"),
            n_seeds=GRADCAM.get("n_seeds", 1),
            example=GRADCAM["example"],
            tables_dir=lambda wc, output: str(Path(output.run_info).parent),
            run_info=run_info_params(),
        script:
            "../../scripts/tabulate_gradcam_overlap.py"

    rule plot_gradcam_overlap_masks:
        input:
            manifest=manifest("isic2018_task2"),
            archives=archive_inputs("isic2018_task2"),
        output:
            figure=report(
                f"{GRADCAM_DIR}/figures/fig01.png",
                caption="../report/gradcam_overlap_fig01.rst",
                category="gradcam_overlap",
            ),
            pdf=f"{GRADCAM_DIR}/figures/fig01.pdf",
        log:
            "logs/plot_gradcam_overlap_masks/fig01.log",
        benchmark:
            "benchmarks/results/plot_gradcam_overlap_masks/fig01.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=5,
        params:
            folder=lambda wc: archive_folder("isic2018_task2"),
            example=GRADCAM["example"],
        script:
            "../../scripts/plot_gradcam_overlap_masks.py"

    rule plot_gradcam_overlap_saliency:
        input:
            manifest=manifest("isic2018_task2"),
            archives=archive_inputs("isic2018_task2"),
            maps=[t for m in GRADCAM_MODELS for t in gradcam_shards(m, "maps")],
        output:
            figure=report(
                f"{GRADCAM_DIR}/figures/fig02.png",
                caption="../report/gradcam_overlap_fig02.rst",
                category="gradcam_overlap",
            ),
            pdf=f"{GRADCAM_DIR}/figures/fig02.pdf",
        log:
            "logs/plot_gradcam_overlap_saliency/fig02.log",
        benchmark:
            "benchmarks/results/plot_gradcam_overlap_saliency/fig02.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=5,
        params:
            folder=lambda wc: archive_folder("isic2018_task2"),
            models=GRADCAM_MODELS,
            labels={m: GRADCAM["models"][m]["label"] for m in GRADCAM_MODELS},
            example=GRADCAM["example"],
        script:
            "../../scripts/plot_gradcam_overlap_saliency.py"

    rule plot_gradcam_overlap_histograms:
        input:
            tables=gradcam_shards(GRADCAM_MODELS[0], "jaccard"),
        output:
            figure=report(
                f"{GRADCAM_DIR}/figures/fig03.png",
                caption="../report/gradcam_overlap_fig03.rst",
                category="gradcam_overlap",
            ),
            pdf=f"{GRADCAM_DIR}/figures/fig03.pdf",
        log:
            "logs/plot_gradcam_overlap_histograms/fig03.log",
        benchmark:
            "benchmarks/results/plot_gradcam_overlap_histograms/fig03.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=5,
        params:
            label=GRADCAM["models"][GRADCAM_MODELS[0]]["label"],
        script:
            "../../scripts/plot_gradcam_overlap_histograms.py"

    for _model, _fig in zip(GRADCAM_MODELS, ("fig04", "fig05")):

        rule:
            name:
                f"plot_gradcam_overlap_thresholds_{_model}"
            input:
                manifest=manifest("isic2018_task2"),
                archives=archive_inputs("isic2018_task2"),
                maps=gradcam_shards(_model, "maps"),
                jaccard=f"{GRADCAM_DIR}/tables/{_fig}.csv",
            output:
                figure=report(
                    f"{GRADCAM_DIR}/figures/{_fig}.png",
                    caption=f"../report/gradcam_overlap_{_fig}.rst",
                    category="gradcam_overlap",
                ),
                pdf=f"{GRADCAM_DIR}/figures/{_fig}.pdf",
            log:
                f"logs/plot_gradcam_overlap_thresholds/{_fig}.log",
            benchmark:
                f"benchmarks/results/plot_gradcam_overlap_thresholds/{_fig}.tsv"
            conda:
                "../../envs/torch.yaml"
            threads: 1
            resources:
                mem_mb=2000,
                runtime=5,
            params:
                folder=lambda wc: archive_folder("isic2018_task2"),
                label=GRADCAM["models"][_model]["label"],
                example=GRADCAM["example"],
            script:
                "../../scripts/plot_gradcam_overlap_thresholds.py"
