"""Rule tabulate_gcn_mil: Tables 1-5 of the gcn_mil paper."""

from melrepro.papers.gcn_mil.tables import tabulate_gcn_mil
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
tabulate_gcn_mil(
    snakemake.input.manifest,
    snakemake.input.split,
    {r: list(getattr(snakemake.input, f"metrics_{r}")) for r in snakemake.params.readings},
    snakemake.input.paper_values,
    dict(snakemake.output.items()),
    bags=snakemake.params.bags,
    model=snakemake.params.model,
    freeze_backbone=snakemake.params.freeze_backbone,
    control_metrics_paths=list(snakemake.input.control),
    run_info=snakemake.params.run_info,
)
