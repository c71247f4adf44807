# Across the papers: the scorecard and the papers' rule-graph figures.


rule score_paper:
    input:
        tables=lambda wc: paper_tables(wc.paper),
        # The workflow's own files: beside the Snakefile, also when it is a module (common.smk).
        paper_values=lambda wc: workflow_file(f"config/paper_values/{wc.paper}.csv"),
        quantities=workflow_file("config/paper_values/quantities.csv"),
        margins=workflow_file("config/paper_values/margins.csv"),
    output:
        scorecard=report(
            "results/scorecard/{paper}.csv",
            caption="../report/scorecard.rst",
            category="scorecard",
        ),
    log:
        "logs/score_paper/{paper}.log",
    benchmark:
        "benchmarks/results/score_paper/{paper}.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        tables_dir="results/{paper}/tables",
        data_source=SOURCE,
    script:
        "../../scripts/score_paper.py"


rule plot_scorecard:
    input:
        scorecard="results/scorecard/{paper}.csv",
    output:
        figure=report(
            "results/scorecard/{paper}.png",
            caption="../report/scorecard_figure.rst",
            category="scorecard",
        ),
        pdf="results/scorecard/{paper}.pdf",
    log:
        "logs/plot_scorecard/{paper}.log",
    benchmark:
        "benchmarks/results/plot_scorecard/{paper}.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../../scripts/plot_scorecard.py"


rule summarize_scorecard:
    input:
        scorecards=[
            f"results/scorecard/{p}.csv" for p in active_papers() if ARTIFACTS.get(p)
        ],
        figures=[
            f"results/scorecard/{p}.png" for p in active_papers() if ARTIFACTS.get(p)
        ],
    output:
        summary=report(
            "results/scorecard/summary.md",
            caption="../report/scorecard_summary.rst",
            category="scorecard",
        ),
    log:
        "logs/summarize_scorecard/summary.log",
    benchmark:
        "benchmarks/results/summarize_scorecard/summary.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../../scripts/summarize_scorecard.py"


# The departures from the papers (docs/deviations.md, generated from the code's marks) in the report.
rule copy_deviations:
    input:
        workflow_file("docs/deviations.md"),
    output:
        deviations=report(
            "results/deviations.md",
            caption="../report/deviations.rst",
            category="deviations",
        ),
    log:
        "logs/copy_deviations/deviations.log",
    benchmark:
        "benchmarks/results/copy_deviations/deviations.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=100,
        runtime=1,
    shell:
        "cp {input} {output.deviations} 2> {log}"


# The "diagram" artifacts: each paper's pipeline drawing is replaced by the workflow's own rule graph.
for _paper, _figure in RULEGRAPH_FIGURES.items():

    rule:
        name:
            f"draw_rulegraph_{_paper}"
        output:
            figure=report(
                f"results/{_paper}/figures/{_figure}.png",
                caption=f"../report/rulegraph.rst",
                category=_paper,
            ),
        log:
            f"logs/draw_rulegraph/{_paper}.log",
        benchmark:
            f"benchmarks/results/draw_rulegraph/{_paper}.tsv"
        conda:
            "../../envs/report.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        params:
            paper=_paper,
            targets=[
                p
                for p in ARTIFACTS.get(_paper, [])
                if Path(p).name != f"{_figure}.png"
            ],
            # this workflow's own Snakefile (in a wrapper, main_snakefile is the wrapper's)
            snakefile=workflow_snakefile(),
            configfiles=workflow.configfiles,
        script:
            "../../scripts/draw_rulegraph.py"


# Folders that several rules write into get their run_info.json from this rule (the others are
# written by the rule that owns the folder).
SHARED_OUTPUT_FOLDERS = {
    "results/data/tables": "data",
    "results/data/figures": "data",
    "results/scorecard": None,
    "results/effnet_ham/figures": "effnet_ham",
    "results/siim2020/figures": "siim2020",
    "results/siim2020/submission": "siim2020",
}


rule write_folder_run_info:
    output:
        run_info="{folder}/run_info.json",
    log:
        "logs/write_folder_run_info/{folder}.log",
    benchmark:
        "benchmarks/results/write_folder_run_info/{folder}.tsv"
    wildcard_constraints:
        folder="|".join(SHARED_OUTPUT_FOLDERS),
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        run_info=run_info_params(),
        config=lambda wc: sorted_params(
            config.get(SHARED_OUTPUT_FOLDERS[wc.folder], config["data"])
            if SHARED_OUTPUT_FOLDERS[wc.folder]
            else {p: config[p] for p in active_papers()}
        ),
    script:
        "../../scripts/write_folder_run_info.py"


# ---- Trainings you can compare (issue 22): one row per training, learning curves per paper ----


#: The history file of every training, by paper (sp_graphs trains no network); each training's
#: metrics.json and run_info.json lie beside it. Only the active papers (TRAINING_PAPERS) are read.
#: Every seed (n_seeds) and every label-shuffled control is a training of its own.
TRAINING_HISTORIES = {
    "gcn_mil": [
        f"{GCN_MIL_OUT}/models/{a}/run-{r}_history.tsv"
        for a in GCN_MIL_READINGS
        for r in GCN_MIL_RUNS
    ]
    + [
        f"{GCN_MIL_OUT}/models/{GCN_MIL_CONTROL}/run-{r}_history.tsv"
        for r in GCN_MIL_CONTROL_RUNS
    ],
    "siim2020": (
        [
            f"{folder}/history.csv"
            for t in siim_trainings()
            for folder in seed_folders(siim_model_dir(*t), SIIM)
        ]
        if SIIM
        else []
    ),
    "effnet_ham": [
        f"{folder}/history.csv"
        for v in EFFNET_HAM_TRAINED
        for folder in effnet_ham_seed_folders(v)
    ],
    "gradcam_overlap": [
        f"{folder}/history.csv"
        for m in GRADCAM_TRAINED
        for folder in seed_folders(
            f"{GRADCAM_DIR}/models/{m}", GRADCAM if m in GRADCAM_MODELS else {}
        )
    ],
}
#: The metrics.json beside each history (gcn_mil: run-<R>_metrics.json; its run_info.json is no
#: declared output of train_gcn_mil: the report reads it when present).
TRAINING_METRICS = {
    paper: [
        (
            h.replace("_history.tsv", "_metrics.json")
            if paper == "gcn_mil"
            else str(Path(h).with_name("metrics.json"))
        )
        for h in histories
    ]
    for paper, histories in TRAINING_HISTORIES.items()
}
TRAINING_PAPERS = [p for p in active_papers() if TRAINING_HISTORIES.get(p)]
REPORT_TARGETS += ["results/trainings/trainings.csv"] + [
    f"results/trainings/learning_curves_{p}.png" for p in TRAINING_PAPERS
]


rule tabulate_trainings:
    input:
        histories=[h for p in TRAINING_PAPERS for h in TRAINING_HISTORIES[p]],
        metrics=[m for p in TRAINING_PAPERS for m in TRAINING_METRICS.get(p, [])],
    output:
        table=report(
            "results/trainings/trainings.csv",
            caption="../report/trainings.rst",
            category="trainings",
        ),
        markdown="results/trainings/trainings.md",
        run_info="results/trainings/run_info.json",
    log:
        "logs/tabulate_trainings/trainings.log",
    benchmark:
        "benchmarks/results/tabulate_trainings/trainings.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        papers=TRAINING_PAPERS,
        run_info=run_info_params(),
    script:
        "../../scripts/tabulate_trainings.py"


rule plot_learning_curves:
    input:
        histories=lambda wc: TRAINING_HISTORIES[wc.paper],
        metrics=lambda wc: TRAINING_METRICS.get(wc.paper, []),
    output:
        figure=report(
            "results/trainings/learning_curves_{paper}.png",
            caption="../report/learning_curves.rst",
            category="trainings",
        ),
        pdf="results/trainings/learning_curves_{paper}.pdf",
    log:
        "logs/plot_learning_curves/{paper}.log",
    benchmark:
        "benchmarks/results/plot_learning_curves/{paper}.tsv"
    wildcard_constraints:
        paper="|".join(TRAINING_PAPERS) or "no-training-paper",
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../../scripts/plot_learning_curves.py"
