"""The ``gcn_mil`` paper: GCN-based multi-instance learning for melanoma recognition and lesion
segmentation on ISIC 2017. Each dermoscopy image is a bag of k×k blocks (ResNet18 features),
joined by Eq. 1's adjacency; a GCN with attention pooling classifies it, and Eq. 3 segments it.

Every public function reads files, calls the pure methods of :mod:`melrepro.methods.mil` and
writes files; the Snakemake scripts call exactly one of them. Modules, in the order of the flow:

    options    BagOptions, ModelOptions, TrainOptions, DEVIATIONS
    common     manifest + split, working resolution, cache, atomic saves, run info
    features   cache shard ──extract_gcn_mil_features──▶ features/shard-K.pt (bags, one per
               image × DR angle × view) + shard-K_zero.pt (0° bags only)
    bags       feature shards ──load_bags──▶ bags; BagGraphs (Eq. 1 edges per grid), collate
    train      features ──train_gcn_mil──▶ models/A/run-R.pt (+ checkpoints/, history;
               A = block | stride)
    evaluate   model + 0° features + cache ──evaluate_gcn_mil──▶ evaluation/A/run-R.{csv,json,npz}
    tables     evaluation of all runs ──tabulate_gcn_mil──▶ tables/
    figures    evaluation of all runs ──plot_gcn_mil──▶ figures/

The backbone is frozen and its block features are cached per shard (float16, memory-mapped at
load, cast per batch on the device), so a training epoch only runs the GCN-MIL head. Edges are
not stored: each grid's Eq. 1 graph is rebuilt once at load for the reading of its radius.

Artifact index (id: function that writes it):

    table01-table05  tables.tabulate_gcn_mil (built by tables._table01 ... tables._table05)
    fig01            the rule graph: melrepro.report.rulegraph via workflow/rules/report.smk
    fig02-fig06      figures.plot_gcn_mil (figures._fig02, _fig03, _case_figure for fig04 and
                     fig05, _fig06)

This ``__init__`` imports nothing: import the module of the step you need, e.g.
``from melrepro.papers.gcn_mil.train import train_gcn_mil``.
"""
