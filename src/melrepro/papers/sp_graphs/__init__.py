"""The sp_graphs paper end to end: per-image features, cross-validation, tables and figures.

Elwer, Rushdi & Annaby, "Learning superpixel ensemble and hierarchy graphs for melanoma
detection", arXiv:2604.03710 (2026). The path-level functions here are what the workflow's
scripts call; the methods live in :mod:`melrepro.methods.superpixels`, :mod:`melrepro.methods.graph_weights`,
:mod:`melrepro.methods.graph_features`, :mod:`melrepro.methods.conventional_features` and
:mod:`melrepro.methods.classical`.

Feature variants are named ``<graph>-<weighting>-<signal>-tau<percent>-n<nodes>``, e.g.
``seg-learned-color-tau50-n60``; ``conventional`` holds the 394 image features.

Modules, in the order of the flow (each imports only the ones above it):

    variants   SIGNALS, TABLES (graph, weighting, signal of each results table), variant_key
    features   ExtractionSettings, lesion_box, image_features, extract_features_shard (one
               cache shard -> .npz of every feature block), load_features
    evaluate   table_feature_sets, edge_density, cross_validate_table (one table's CV -> parquet)
    tables     write_tables
    figures    plot_results, plot_examples

Artifact index (id: function that writes it):

    table01-table12  tables.write_tables (from the metrics of evaluate.cross_validate_table)
    fig01-fig03      figures.plot_examples
    fig04            the rule graph: melrepro.report.rulegraph via workflow/rules/report.smk
    fig05, fig06     figures.plot_results
"""
