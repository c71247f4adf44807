"""Rule tabulate_gradcam_overlap: table00-table06, test-split supplements, fig04/fig05 CSVs."""

from melrepro.papers.gradcam_overlap.tables import tabulate
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
models = snakemake.params.models
k = snakemake.params.n_shards
tables = list(snakemake.input.tables)
extra, per_model = list(snakemake.input.seed_predictions), snakemake.params.n_seeds - 1
# the models proper (no label-shuffled control), whose further seeds the rule lists in order
trained_once = [m for m in models if m not in snakemake.params.controls]
tabulate(
    dict(zip(models, snakemake.input.predictions, strict=True)),
    {m: tables[i * k : (i + 1) * k] for i, m in enumerate(models)},
    snakemake.params.labels,
    paper_values_path=snakemake.input.paper_values,
    example=snakemake.params.example,
    tables_dir=snakemake.params.tables_dir,
    run_info=snakemake.params.run_info,
    # each model's further seeds (n_seeds - 1 of them, in the rule's model order): table00 only
    seed_predictions={
        m: extra[i * per_model : (i + 1) * per_model] for i, m in enumerate(trained_once)
    },
    controls=snakemake.params.controls,
)
