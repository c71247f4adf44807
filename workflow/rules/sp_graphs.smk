# Rules of the sp_graphs paper: superpixel ensemble and hierarchy graphs (paper 001).
#
#   cache shard --extract_sp_graphs_features--> features/<dataset>/shard-K.npz (every level, signal, weighting, tau)
#   features --cross_validate_sp_graphs--> cv/<table>_{metrics,selection}.parquet (one job per table,
#                                          and label_shuffled: the control of table07)
#   cv --tabulate_sp_graphs / plot_sp_graphs_results--> tables/table01-12, figures/fig05-06
#   cache --plot_sp_graphs_examples--> figures/fig01-03; fig04 is the shared rule graph (report.smk)
# Every rule uses envs/classical.yaml: melrepro.papers.sp_graphs (features, evaluate, tables,
# figures) imports scikit-image and scikit-learn.

SP_GRAPHS = config.get("sp_graphs", {})
SP_GRAPHS_OUT = "results/sp_graphs"
SP_GRAPHS_RES = SP_GRAPHS.get("working_resolution", "max1024")
SP_GRAPHS_FEATURES = SP_GRAPHS.get("features", {})
SP_GRAPHS_DATASETS = ["isic2017", "isic_archive_melanoma"]
#: One cross-validation job per results table; table07 runs the other protocol's fused sets.
SP_GRAPHS_CV = [f"table{i:02d}" for i in range(1, 12)]
SP_GRAPHS_TABLES = [f"table{i:02d}" for i in range(1, 13)]
#: The label-shuffled control's CV (the fused sets of tables 1-6 on permuted training labels):
#: marked rows of table07 when sp_graphs.label_shuffled_control is on.
SP_GRAPHS_CONTROL = "label_shuffled"
SP_GRAPHS_CONTROLS = (
    [SP_GRAPHS_CONTROL] if SP_GRAPHS.get("label_shuffled_control", False) else []
)

ARTIFACTS["sp_graphs"] = [
    f"{SP_GRAPHS_OUT}/tables/{t}.csv" for t in SP_GRAPHS_TABLES
] + [f"{SP_GRAPHS_OUT}/figures/fig{i:02d}.png" for i in range(1, 7)]


SP_GRAPHS_FEATURE_FILES = [
    f"{SP_GRAPHS_OUT}/features/{d}/shard-{k:03d}.npz"
    for d in SP_GRAPHS_DATASETS
    for k in range(n_shards(d))
]
#: Everything the cross-validation of a table needs from the config.
SP_GRAPHS_CV_PARAMS = {
    "seg_levels": SP_GRAPHS_FEATURES.get("seg_levels", [20, 40, 60, 80, 100]),
    "shg_levels": SP_GRAPHS_FEATURES.get("shg_levels", [5, 10, 20, 40, 80]),
    "prune_taus": SP_GRAPHS_FEATURES.get("prune_taus", [0.25, 0.5, 0.75]),
    "n_splits": SP_GRAPHS.get("n_splits", 10),
    "include_conventional": SP_GRAPHS.get("include_conventional", True),
    "classifier_settings": SP_GRAPHS.get("classifier_settings", {}),
    "classifiers": SP_GRAPHS.get(
        "classifiers", ["SVM", "KNN", "QDA", "RF", "GB", "AB", "MLP"]
    ),
    "seed": config["seed"],
}


rule extract_sp_graphs_features:
    input:
        cache=f"results/data/{{dataset}}/cache/{SP_GRAPHS_RES}/shard-{{shard}}.npz",
        manifest="results/data/{dataset}/manifest.parquet",
    output:
        features=f"{SP_GRAPHS_OUT}/features/{{dataset}}/shard-{{shard}}.npz",
    log:
        "logs/extract_sp_graphs_features/{dataset}/{shard}.log",
    benchmark:
        "benchmarks/results/extract_sp_graphs_features/{dataset}/{shard}.tsv"
    conda:
        "../../envs/classical.yaml"
    threads: SP_GRAPHS.get("threads", 2)
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        settings=SP_GRAPHS_FEATURES,
        # ISIC 2017: the paper's train + test images; archive melanomas: all
        splits=lambda wc: (
            SP_GRAPHS.get("isic2017_splits", ["train", "test"])
            if wc.dataset == "isic2017"
            else None
        ),
        max_images=SP_GRAPHS.get("max_images_per_shard"),
    script:
        "../../scripts/extract_sp_graphs_features.py"


rule cross_validate_sp_graphs:
    input:
        features=SP_GRAPHS_FEATURE_FILES,
        manifests=[manifest(d) for d in SP_GRAPHS_DATASETS],
    output:
        metrics=f"{SP_GRAPHS_OUT}/cv/{{table}}_metrics.parquet",
        selection=f"{SP_GRAPHS_OUT}/cv/{{table}}_selection.parquet",
    log:
        "logs/cross_validate_sp_graphs/{table}.log",
    benchmark:
        "benchmarks/results/cross_validate_sp_graphs/{table}.tsv"
    wildcard_constraints:
        table=f"table(0[1-9]|1[01])|{SP_GRAPHS_CONTROL}",
    conda:
        "../../envs/classical.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=600,
    params:
        # table07 holds the fused sets of tables 1-6 under the other protocol
        protocol=lambda wc: (
            SP_GRAPHS.get("compare_protocol", "before_cv")
            if wc.table == "table07"
            else SP_GRAPHS.get("protocol", "within_fold")
        ),
        cv=SP_GRAPHS_CV_PARAMS,
    script:
        "../../scripts/cross_validate_sp_graphs.py"


rule tabulate_sp_graphs:
    input:
        metrics=expand(
            f"{SP_GRAPHS_OUT}/cv/{{table}}_metrics.parquet", table=SP_GRAPHS_CV
        ),
        control=expand(
            f"{SP_GRAPHS_OUT}/cv/{{table}}_metrics.parquet", table=SP_GRAPHS_CONTROLS
        ),
        paper_values=workflow_file("config/paper_values/sp_graphs.csv"),
    output:
        **{
            t: report(
                f"{SP_GRAPHS_OUT}/tables/{t}.csv",
                caption=f"../report/sp_graphs_{t}.rst",
                category="sp_graphs",
            )
            for t in SP_GRAPHS_TABLES
        },
    log:
        "logs/tabulate_sp_graphs/tables.log",
    benchmark:
        "benchmarks/results/tabulate_sp_graphs/tables.tsv"
    conda:
        "../../envs/classical.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        protocol=SP_GRAPHS.get("protocol", "within_fold"),
        tables=SP_GRAPHS_CV,
        run_info=run_info_params(),
        config=SP_GRAPHS,
    script:
        "../../scripts/tabulate_sp_graphs.py"


rule plot_sp_graphs_results:
    input:
        metrics=expand(
            f"{SP_GRAPHS_OUT}/cv/{{table}}_metrics.parquet", table=SP_GRAPHS_CV
        ),
        selection=expand(
            f"{SP_GRAPHS_OUT}/cv/{{table}}_selection.parquet", table=SP_GRAPHS_CV
        ),
    output:
        fig05=report(
            f"{SP_GRAPHS_OUT}/figures/fig05.png",
            caption="../report/sp_graphs_fig05.rst",
            category="sp_graphs",
        ),
        fig06=report(
            f"{SP_GRAPHS_OUT}/figures/fig06.png",
            caption="../report/sp_graphs_fig06.rst",
            category="sp_graphs",
        ),
    log:
        "logs/plot_sp_graphs_results/figures.log",
    benchmark:
        "benchmarks/results/plot_sp_graphs_results/figures.tsv"
    conda:
        "../../envs/classical.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        tables=SP_GRAPHS_CV,
        run_info=run_info_params(),
        config=SP_GRAPHS,
    script:
        "../../scripts/plot_sp_graphs_results.py"


rule plot_sp_graphs_examples:
    input:
        cache=cache_shards("isic2017", SP_GRAPHS_RES)[:1],
        manifest=manifest("isic2017"),
    output:
        fig01=report(
            f"{SP_GRAPHS_OUT}/figures/fig01.png",
            caption="../report/sp_graphs_fig01.rst",
            category="sp_graphs",
        ),
        fig02=report(
            f"{SP_GRAPHS_OUT}/figures/fig02.png",
            caption="../report/sp_graphs_fig02.rst",
            category="sp_graphs",
        ),
        fig03=report(
            f"{SP_GRAPHS_OUT}/figures/fig03.png",
            caption="../report/sp_graphs_fig03.rst",
            category="sp_graphs",
        ),
    log:
        "logs/plot_sp_graphs_examples/figures.log",
    benchmark:
        "benchmarks/results/plot_sp_graphs_examples/figures.tsv"
    conda:
        "../../envs/classical.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        settings=SP_GRAPHS_FEATURES,
        fig02_level=SP_GRAPHS.get("fig02_level", 20),
        seed=config["seed"],
    script:
        "../../scripts/plot_sp_graphs_examples.py"
