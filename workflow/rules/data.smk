# Data: archives (synthetic twin, the official files, or the rehearsal of both), ingest, image cache, splits, data report.


if SOURCE == "synthetic":

    # One rule per dataset key: each writes that dataset's official files (DESIGN.md section 1).
    for _dataset in DATASETS:

        rule:
            name:
                f"make_synthetic_{_dataset}"
            output:
                files=[
                    f"{ARCHIVES}/{_dataset}/{name}"
                    for name in LAYOUTS[_dataset].files()
                ],
                truth=f"{ARCHIVES}/{_dataset}/synthetic_truth/truth.csv",
            log:
                f"logs/make_synthetic_archive/{_dataset}.log",
            benchmark:
                f"benchmarks/results/make_synthetic_archive/{_dataset}.tsv"
            conda:
                "../../envs/data.yaml"
            threads: 1
            resources:
                mem_mb=2000,
                runtime=30,
            params:
                dataset=_dataset,
                spec=sorted_params(config["data"]["synthetic"].get(_dataset, {})),
                seed=config["seed"],
                # isic2019 also holds the task-2 twin's images (paper 004 joins them).
                task2_spec=(
                    sorted_params(
                        config["data"]["synthetic"].get("isic2018_task2", {})
                    )
                    if _dataset == "isic2019"
                    else None
                ),
            script:
                "../../scripts/make_synthetic_archive.py"

else:

    include: "download.smk"


if SOURCE == "rehearsal":

    # The rehearsal: the official CSVs come through download.smk (the real lock), the images are
    # drawn per official row at data.rehearsal.image_size px into the official zips.
    for _dataset in DATASETS:

        rule:
            name:
                f"make_rehearsal_{_dataset}"
            input:
                rows=rehearsal_row_input(_dataset),
            output:
                files=rehearsal_outputs(_dataset),
                lock=f"{ARCHIVES}/{_dataset}/rehearsal_checksums.tsv",
            log:
                f"logs/make_rehearsal_archive/{_dataset}.log",
            benchmark:
                f"benchmarks/results/make_rehearsal_archive/{_dataset}.tsv"
            conda:
                "../../envs/data.yaml"
            threads: 1
            resources:
                mem_mb=4000,
                runtime=120,
            params:
                dataset=_dataset,
                image_size=REHEARSAL["image_size"],
                seed=config["seed"],
                archive_dir=config["data"].get("archive_dir"),
                checksums=config["data"]["checksums"],
                melanoma_limit=config["data"]["archive_melanomas"]["limit"],
            script:
                "../../scripts/make_rehearsal_archive.py"


rule check_images:
    input:
        archives=lambda wc: archive_inputs(wc.dataset),
    output:
        checks="results/data/{dataset}/checks/shard-{shard}.parquet",
    log:
        "logs/check_images/{dataset}/{shard}.log",
    benchmark:
        "benchmarks/results/check_images/{dataset}/{shard}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=60,
    params:
        folder=lambda wc: archive_folder(wc.dataset),
        n_shards=lambda wc: n_shards(wc.dataset),
    script:
        "../../scripts/check_images.py"


rule ingest_dataset:
    input:
        archives=lambda wc: archive_inputs(wc.dataset),
        checks=lambda wc: check_shards(wc.dataset),
        pinned_ids=pinned_melanoma_ids,
    output:
        manifest="results/data/{dataset}/manifest.parquet",
        quarantine="results/data/{dataset}/quarantine.csv",
        run_info="results/data/{dataset}/run_info.json",
    log:
        "logs/ingest_dataset/{dataset}.log",
    benchmark:
        "benchmarks/results/ingest_dataset/{dataset}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        folder=lambda wc: archive_folder(wc.dataset),
        n_shards=lambda wc: n_shards(wc.dataset),
        on_undecodable=config["data"]["on_undecodable"],
        run_info=run_info_params(),
        config=sorted_params(config["data"]),
        pinned={
            "limit": config["data"]["archive_melanomas"]["limit"],
            "accept_unpinned": config["data"]["archive_melanomas"]["accept_unpinned"],
        },
    script:
        "../../scripts/ingest_dataset.py"


rule cache_images:
    input:
        manifest="results/data/{dataset}/manifest.parquet",
        archives=lambda wc: archive_inputs(wc.dataset),
    output:
        shard="results/data/{dataset}/cache/{res}/shard-{shard}.npz",
    log:
        "logs/cache_images/{dataset}/{res}/{shard}.log",
    benchmark:
        "benchmarks/results/cache_images/{dataset}/{res}/{shard}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        # benchmarks/bench_resources.py: an original-resolution shard of ISIC 2017 (gcn_mil)
        # needs ~7.9 GB at the real counts (6 GB was declared); doubled on a retry.
        mem_mb=grows_with_attempt(10000),
        runtime=grows_with_attempt(60),
    params:
        folder=lambda wc: archive_folder(wc.dataset),
    script:
        "../../scripts/cache_images.py"


rule make_split:
    input:
        manifest="results/data/{dataset}/manifest.parquet",
    output:
        split="results/data/{dataset}/splits/{split_name}.parquet",
    log:
        "logs/make_split/{dataset}/{split_name}.log",
    benchmark:
        "benchmarks/results/make_split/{dataset}/{split_name}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        seed=config["seed"],
        splits=sorted_params(config["data"].get("splits", {})),
    script:
        "../../scripts/make_split.py"


rule count_classes:
    input:
        manifests=[manifest(d) for d in active_datasets()],
    output:
        table=report(
            "results/data/tables/class_counts.csv",
            caption="../report/data_class_counts_table.rst",
            category="data",
        ),
        figure=report(
            "results/data/figures/class_counts.png",
            caption="../report/data_class_counts_figure.rst",
            category="data",
        ),
    log:
        "logs/count_classes/count_classes.log",
    benchmark:
        "benchmarks/results/count_classes/count_classes.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../../scripts/count_classes.py"
