"""The synthetic twin of the ISIC archives: same files and layouts, lesions with known ground truth."""

from melrepro.synthetic.archive import write_synthetic_archive
from melrepro.synthetic.spec import CLASSES, DEFAULT_SPEC, resolve_spec, synthetic_schema

__all__ = ["CLASSES", "DEFAULT_SPEC", "resolve_spec", "synthetic_schema", "write_synthetic_archive"]
