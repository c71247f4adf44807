"""gradcam_overlap: Grad-CAM of VGG16 and ResNet50 vs the ISIC 2018 task-2 feature masks.

Paper 004 (Nunnari, Kadir & Sonntag 2021): how well do the Grad-CAM maps of ISIC 2019 classifiers
overlap the dermoscopic feature masks of ISIC 2018 task 2 (Jaccard vs threshold)? Settings the
paper leaves open come from its toolkit TIML, see ``shared/specs/gradcam_overlap.md``.

Path-level functions called by the rules of ``workflow/rules/gradcam_overlap.smk``, modules in
the order of the flow (each imports only the ones before it and this package's constants):

1. :mod:`.datasets`: :func:`~.datasets.join_task2` labels the task-2 images with their ISIC 2019
   ground truth; the classifier's frame, image-cache reads, (dihedral) augmentation, TIML's class
   weights and the analysis set (MEL+NV with a non-empty union).
2. :mod:`.train`: :func:`~.train.train_classifier` trains one 8-class ISIC 2019 classifier (VGG16
   at 450 px, ResNet50 at 227 px, Flatten-MLP heads, SGD + Nesterov, inverse-time decay,
   class-weighted CE, best checkpoint by validation accuracy) on the ``class_floor_80_10_10``
   split and predicts val/test.
3. :mod:`.evaluate`: :func:`~.evaluate.compute_overlap` (one task-2 shard, one model): Grad-CAM
   of the predicted class at the paper's layer, kept at layer resolution, and the exact Jaccard of
   every threshold with every mask from the per-cell pixel counts
   (:mod:`melrepro.data.cellcounts`); per-class metrics, Jaccard statistics, Mann-Whitney U.
4. :mod:`.tables`: :func:`~.tables.tabulate` writes table00-table06 (plus test-split-only
   supplements and the fig04/fig05 Jaccard CSVs); :mod:`.figures`: the ``plot_*`` functions draw
   fig01-fig05.

Artifact index (id: function that writes it):

    table00-table06  tables.tabulate (table00 from train.train_classifier predictions)
    fig01            figures.plot_example_masks
    fig02            figures.plot_saliency_example
    fig03            figures.plot_jaccard_histograms
    fig04, fig05     figures.plot_thresholds (and their CSVs from tables.tabulate)

No module here imports torch at import time (table and figure jobs start without it).
"""

from __future__ import annotations

__all__ = ["CLASSES", "FEATURE_LABELS", "SPLITS", "THRESHOLDS", "jaccard_column"]

#: The ISIC 2019 training classes in ground-truth column order (UNK has no training images).
CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
#: Paper 004's column names of the five features and the union (Tables 1-3).
FEATURE_LABELS = {
    "globules": "Globules",
    "milia_like_cyst": "Mil.",
    "negative_network": "Neg. net.",
    "pigment_network": "Pig. net.",
    "streaks": "Streaks",
    "union": "Union",
}
#: Thresholds of §5: 0.0, 0.1, ..., 1.0.
THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(11))
#: The classifier's splits (``class_floor_80_10_10``).
SPLITS = ("train", "val", "test")


def jaccard_column(channel: str, t: float) -> str:
    """The overlap table's column of ``channel``'s Jaccard at threshold ``t``."""
    return f"J__{channel}__{t:.1f}"
