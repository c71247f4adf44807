# melanoma-repro: every table and figure of five melanoma studies, from the raw ISIC archives.
#
#   raw archives --ingest--> manifests --prepare--> features / models --evaluate--> tables, figures
#   (resources/)             (results/data/)        (results/<paper>/)              scorecard + report
#
# `snakemake --cores all` runs the embedded default (synthetic archives written by the workflow);
# `snakemake --cores all --configfile config/isic.yaml` runs the papers' settings on the real archives.

from snakemake.utils import min_version

min_version("9")


# The embedded default is loaded only when no --configfile is given. A run with its own
# --configfile (the real run: config/isic.yaml) is that file plus the schemas' defaults, which are
# the papers' values (workflow/schemas/); Snakemake would otherwise merge the file over config.yaml
# key by key and the real run would inherit every value only the default sets (issue 19). To change
# a few keys of the default, name it first: --configfile config/config.yaml mine.yaml.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


# ---- shared: config validation, paths, input functions ----
include: "workflow/rules/common.smk"
# ---- data: archives (synthetic twin or download), ingest, manifests, image cache, splits ----
include: "workflow/rules/data.smk"
# ---- torchvision ImageNet weights for offline compute nodes (TORCH_HOME) ----
include: "workflow/rules/weights.smk"
# ---- the papers ----
include: "workflow/rules/gcn_mil.smk"
include: "workflow/rules/sp_graphs.smk"
include: "workflow/rules/siim2020.smk"
include: "workflow/rules/effnet_ham.smk"
include: "workflow/rules/gradcam_overlap.smk"
# ---- scorecard, rule graphs, report ----
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
        # the departures from the papers, linked from the report (workflow/report/workflow.rst)
        "results/deviations.md",


# ---- after every rule exists (see common.smk): each script rule also depends on the melrepro
# code it imports; short rules run on the submitting host ----
add_code_digests()
mark_short_rules_local()
