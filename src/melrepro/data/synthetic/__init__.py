"""The synthetic twin of the ISIC archives: the official files, drawn so that the papers' signals
exist, with the ground truth beside them (DESIGN.md section 1).

``write_synthetic_archive(dataset, outdir, spec, seed=...)`` writes one dataset;
``DEFAULT_SPEC[dataset]`` is its default ``data.synthetic.<dataset>`` config section.
"""

from melrepro.data.synthetic.spec import CLASSES, DEFAULT_SPEC, resolve_spec, synthetic_schema
from melrepro.data.synthetic.writer import TRUTH_COLUMNS, write_synthetic_archive

__all__ = [
    "CLASSES",
    "DEFAULT_SPEC",
    "TRUTH_COLUMNS",
    "resolve_spec",
    "synthetic_schema",
    "write_synthetic_archive",
]
