"""Rule make_split: one named split of one dataset, as data."""

from melrepro.data.splits import write_split
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
name = snakemake.wildcards.split_name
splits = snakemake.params.splits
options = {"seed": snakemake.params.seed}
if name in ("lesion_70_15_15", "patient_85_15"):
    options["fractions"] = splits.get(name)
if name == "class_floor_80_10_10":
    floor = splits.get(name, {})
    options["fractions"] = floor.get("fractions")
    options["group_by_lesion"] = bool(floor.get("group_by_lesion", False))
if name == "cv10":
    options["n_folds"] = splits.get("cv_folds", 10)
write_split(snakemake.input.manifest, name, snakemake.output.split, **options)
