# Rules of the gcn_mil paper: GCN-based multi-instance learning on image blocks, ISIC 2017 (paper 000).
#
#   cache shard --extract_gcn_mil_features--> features/shard-K.pt (frozen ResNet18, one bag per image x DR angle x view)
#                                             + features/shard-K_zero.pt (only the 0-degree bags, for evaluation/figures)
#   features --train_gcn_mil--> models/H/run-R.pt      (H = reading of Eq. 1's radius: block | stride, n_runs runs;
#                                                       or label_shuffled: the control, run 0)
#   model --evaluate_gcn_mil--> evaluation/H/run-R_*   (test metrics, eta sweep on training)
#   evaluation --tabulate_gcn_mil / plot_gcn_mil--> tables/table01-05, figures/fig02-06

GCN_MIL = config.get("gcn_mil", {})
GCN_MIL_OUT = "results/gcn_mil"
GCN_MIL_RUNS = list(range(int(GCN_MIL.get("n_runs", 5))))
GCN_MIL_TABLES = [f"table{i:02d}" for i in range(1, 6)]
GCN_MIL_FIGURES = [f"fig{i:02d}" for i in range(2, 7)]
GCN_MIL_BAGS = {
    "block_size": GCN_MIL.get("block_size", 224),
    "strides": GCN_MIL.get("strides", [50, 120, 200]),
    "height_bounds": GCN_MIL.get("height_bounds", [1000, 2000]),
    "scale": GCN_MIL.get("scale", 1.0),
    "cover_edges": GCN_MIL.get("cover_edges", False),
    "rotation_steps": GCN_MIL.get(
        "rotation_steps", {"melanoma": 18, "seborrheic_keratosis": 18, "nevus": 45}
    ),
    "batch_size": GCN_MIL.get("feature_batch_size", 64),
    "dihedral_views": GCN_MIL.get("dihedral_views", 8),
    "data_path": GCN_MIL.get("data_path", "auto"),
    "mixed_precision": GCN_MIL.get("mixed_precision", "auto"),
}
#: Eq. 1's radius sqrt(2) * k: `block` reads k as the block side (literal), `stride` as the stride.
#: Both readings are trained and evaluated on the same features; figures show `adjacency_radius`.
GCN_MIL_GRAPH = {
    "adjacency_radius": GCN_MIL.get("adjacency_radius", "block"),
    "radius_factor": GCN_MIL.get("radius_factor", 2**0.5),
}
GCN_MIL_READINGS = list(GCN_MIL.get("adjacency_readings", ["block", "stride"]))
#: The label-shuffled control (models/label_shuffled/): run 0 of the adjacency_radius reading
#: trained on permuted training labels, evaluated as the others; a marked row of table05.
GCN_MIL_CONTROL = "label_shuffled"
GCN_MIL_CONTROL_RUNS = [0] if GCN_MIL.get("label_shuffled_control", False) else []
if GCN_MIL_GRAPH["adjacency_radius"] not in GCN_MIL_READINGS:
    raise ValueError(
        f"gcn_mil.adjacency_radius {GCN_MIL_GRAPH['adjacency_radius']!r} must be one of "
        f"gcn_mil.adjacency_readings {GCN_MIL_READINGS}"
    )

#: Full resolution (config/isic.yaml) needs hours; its resources are the `gcn_mil_resources`
#: section of the config (measured by benchmarks/bench_mil.py --memory and extrapolated).
GCN_MIL_FULL = GCN_MIL.get("scale", 1.0) >= 1.0
GCN_MIL_MEM = GCN_MIL.get("mem_mb", {})

ARTIFACTS["gcn_mil"] = (
    [f"{GCN_MIL_OUT}/tables/{t}.csv" for t in GCN_MIL_TABLES]
    + [f"{GCN_MIL_OUT}/figures/fig01.png"]
    + [f"{GCN_MIL_OUT}/figures/{f}.png" for f in GCN_MIL_FIGURES]
)


#: The isic2017 image-cache shards read, and the block-feature file made from each.
GCN_MIL_CACHES = cache_shards("isic2017", GCN_MIL.get("cache_res", "orig"))
GCN_MIL_FEATURES = [f"{GCN_MIL_OUT}/features/{Path(p).stem}.pt" for p in GCN_MIL_CACHES]
GCN_MIL_ZERO = [
    f"{GCN_MIL_OUT}/features/{Path(p).stem}_zero.pt" for p in GCN_MIL_CACHES
]


rule extract_gcn_mil_features:
    input:
        cache=f"results/data/isic2017/cache/{GCN_MIL.get('cache_res', 'orig')}/shard-{{shard}}.npz",
        manifest=manifest("isic2017"),
        split=split_file("isic2017", "official"),
        weights=torchvision_weights("resnet18"),
    output:
        features=f"{GCN_MIL_OUT}/features/shard-{{shard}}.pt",
        zero=f"{GCN_MIL_OUT}/features/shard-{{shard}}_zero.pt",
        run_info=f"{GCN_MIL_OUT}/features/shard-{{shard}}_run_info.json",
    log:
        "logs/extract_gcn_mil_features/{shard}.log",
    benchmark:
        "benchmarks/results/extract_gcn_mil_features/{shard}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=grows_with_attempt(GCN_MIL_MEM.get("extract", 4000)),
        runtime=grows_with_attempt(1440 if GCN_MIL_FULL else 60),
        gpu=JOB_GPUS,
    params:
        bags=GCN_MIL_BAGS,
        pretrained=config["pretrained"],
        seed=config["seed"],
        device=config["device"],
        run_info=run_info_params(),
    script:
        "../../scripts/extract_gcn_mil_features.py"


rule train_gcn_mil:
    input:
        features=GCN_MIL_FEATURES,
    output:
        model=f"{GCN_MIL_OUT}/models/{{head}}/run-{{run}}.pt",
        history=f"{GCN_MIL_OUT}/models/{{head}}/run-{{run}}_history.tsv",
        # What the trainings report reads (threads, training-set size, wall time).
        metrics=f"{GCN_MIL_OUT}/models/{{head}}/run-{{run}}_metrics.json",
    log:
        "logs/train_gcn_mil/{head}/{run}.log",
    benchmark:
        "benchmarks/results/train_gcn_mil/{head}/{run}.tsv"
    wildcard_constraints:
        run=r"\d+",
        head=f"block|stride|{GCN_MIL_CONTROL}",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=grows_with_attempt(GCN_MIL_MEM.get("train", 8000)),
        runtime=grows_with_attempt(2880 if GCN_MIL_FULL else 120),
        gpu=JOB_GPUS,
    params:
        checkpoint_dir=lambda wc: f"{GCN_MIL_OUT}/checkpoints/{wc.head}/run-{wc.run}",
        # the control is trained as the adjacency_radius reading, on permuted training labels
        adjacency=lambda wc: (
            GCN_MIL_GRAPH["adjacency_radius"]
            if wc.head == GCN_MIL_CONTROL
            else wc.head
        ),
        shuffle_labels=lambda wc: wc.head == GCN_MIL_CONTROL,
        radius_factor=GCN_MIL_GRAPH["radius_factor"],
        model=GCN_MIL.get("model", {}),
        train=GCN_MIL.get("train", {}),
        seed=config["seed"],
        device=config["device"],
        run_info=run_info_params(),
    script:
        "../../scripts/train_gcn_mil.py"


rule evaluate_gcn_mil:
    input:
        model=f"{GCN_MIL_OUT}/models/{{head}}/run-{{run}}.pt",
        features=GCN_MIL_ZERO,
        caches=GCN_MIL_CACHES,
    output:
        predictions=f"{GCN_MIL_OUT}/evaluation/{{head}}/run-{{run}}_predictions.csv",
        sweep=f"{GCN_MIL_OUT}/evaluation/{{head}}/run-{{run}}_sweep.csv",
        metrics=f"{GCN_MIL_OUT}/evaluation/{{head}}/run-{{run}}_metrics.json",
        scores=f"{GCN_MIL_OUT}/evaluation/{{head}}/run-{{run}}_scores.npz",
    log:
        "logs/evaluate_gcn_mil/{head}/{run}.log",
    benchmark:
        "benchmarks/results/evaluate_gcn_mil/{head}/{run}.tsv"
    wildcard_constraints:
        run=r"\d+",
        head=f"block|stride|{GCN_MIL_CONTROL}",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=grows_with_attempt(GCN_MIL_MEM.get("evaluate", 4000)),
        runtime=grows_with_attempt(240 if GCN_MIL_FULL else 60),
        gpu=JOB_GPUS,
    params:
        thresholds=GCN_MIL.get("thresholds", {}),
        device=config["device"],
        run_info=run_info_params(),
    script:
        "../../scripts/evaluate_gcn_mil.py"


rule tabulate_gcn_mil:
    input:
        **{
            f"metrics_{reading}": expand(
                f"{GCN_MIL_OUT}/evaluation/{reading}/run-{{run}}_metrics.json",
                run=GCN_MIL_RUNS,
            )
            for reading in GCN_MIL_READINGS
        },
        control=expand(
            f"{GCN_MIL_OUT}/evaluation/{GCN_MIL_CONTROL}/run-{{run}}_metrics.json",
            run=GCN_MIL_CONTROL_RUNS,
        ),
        manifest=manifest("isic2017"),
        split=split_file("isic2017", "official"),
        paper_values=workflow_file("config/paper_values/gcn_mil.csv"),
    output:
        **{
            t: report(
                f"{GCN_MIL_OUT}/tables/{t}.csv",
                caption=f"../report/gcn_mil_{t}.rst",
                category="gcn_mil",
            )
            for t in GCN_MIL_TABLES
        },
    log:
        "logs/tabulate_gcn_mil/tabulate.log",
    benchmark:
        "benchmarks/results/tabulate_gcn_mil/tabulate.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=grows_with_attempt(GCN_MIL_MEM.get("tabulate", 2000)),
        runtime=grows_with_attempt(10),
    params:
        bags={**GCN_MIL_BAGS, **GCN_MIL_GRAPH},
        readings=GCN_MIL_READINGS,
        model=GCN_MIL.get("model", {}),
        freeze_backbone=GCN_MIL.get("freeze_backbone", True),
        run_info=run_info_params(),
    script:
        "../../scripts/tabulate_gcn_mil.py"


rule plot_gcn_mil:
    input:
        manifest=manifest("isic2017"),
        split=split_file("isic2017", "official"),
        caches=GCN_MIL_CACHES,
        features=GCN_MIL_ZERO,
        predictions=f"{GCN_MIL_OUT}/evaluation/{GCN_MIL_GRAPH['adjacency_radius']}/run-0_predictions.csv",
        scores=f"{GCN_MIL_OUT}/evaluation/{GCN_MIL_GRAPH['adjacency_radius']}/run-0_scores.npz",
        metrics=f"{GCN_MIL_OUT}/evaluation/{GCN_MIL_GRAPH['adjacency_radius']}/run-0_metrics.json",
        sweeps=expand(
            f"{GCN_MIL_OUT}/evaluation/{GCN_MIL_GRAPH['adjacency_radius']}/run-{{run}}_sweep.csv",
            run=GCN_MIL_RUNS,
        ),
    output:
        **{
            f: report(
                f"{GCN_MIL_OUT}/figures/{f}.png",
                caption=f"../report/gcn_mil_{f}.rst",
                category="gcn_mil",
            )
            for f in GCN_MIL_FIGURES
        },
    log:
        "logs/plot_gcn_mil/plot.log",
    benchmark:
        "benchmarks/results/plot_gcn_mil/plot.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=grows_with_attempt(GCN_MIL_MEM.get("plot", 4000)),
        runtime=grows_with_attempt(30 if GCN_MIL_FULL else 10),
    params:
        bags={**GCN_MIL_BAGS, **GCN_MIL_GRAPH},
        n_cases=GCN_MIL.get("figure_cases", 4),
        seed=config["seed"],
        run_info=run_info_params(),
    script:
        "../../scripts/plot_gcn_mil.py"
