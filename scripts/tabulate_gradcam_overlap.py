"""Rule tabulate_gradcam_overlap: table00-table06, test-split supplements, fig04/fig05 CSVs."""

from melrepro.papers.gradcam_overlap.tables import tabulate
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
models = snakemake.params.models
k = snakemake.params.n_shards
tables = list(snakemake.input.tables)
tabulate(
    dict(zip(models, snakemake.input.predictions, strict=True)),
    {m: tables[i * k : (i + 1) * k] for i, m in enumerate(models)},
    snakemake.params.labels,
    paper_values_path=snakemake.input.paper_values,
    example=snakemake.params.example,
    tables_dir=snakemake.params.tables_dir,
    run_info=snakemake.params.run_info,
    controls=snakemake.params.controls,
)
