"""Rule draw_rulegraph_<paper>: the workflow's rule graph for one paper's artifacts, as a figure."""

from melrepro.report.logs import log_to_file
from melrepro.report.rulegraph import draw_rulegraph, parse_rulegraph, rulegraph_dot

log_to_file(snakemake.log[0])
dot = rulegraph_dot(
    snakemake.params.snakefile, snakemake.params.targets, snakemake.params.configfiles
)
draw_rulegraph(
    parse_rulegraph(dot),
    snakemake.output.figure,
    title=f"{snakemake.params.paper}: the rules that produce its tables and figures",
)
