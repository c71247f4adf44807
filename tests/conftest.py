"""Shared fixtures: tiny synthetic archives of every dataset, written once per test session; node
signals of twin lesions for the graph tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from melrepro.data.layouts import DATASETS

#: A spec per dataset small enough for unit tests (seconds), with every class and split present.
TINY_COUNTS = {
    "isic2017": {
        "train": {"melanoma": 3, "seborrheic_keratosis": 2, "nevus": 3},
        "val": {"melanoma": 1, "seborrheic_keratosis": 1, "nevus": 1},
        "test": {"melanoma": 2, "seborrheic_keratosis": 1, "nevus": 2},
    },
    "isic_archive_melanoma": {"train": {"melanoma": 3}},
    "isic2018_task2": {"train": {"melanoma": 3, "seborrheic_keratosis": 2, "nevus": 3}},
    "isic2018_task3": {
        "train": {"MEL": 3, "NV": 5, "BCC": 1, "AKIEC": 1, "BKL": 1, "DF": 1, "VASC": 1},
        "val": {"MEL": 1, "NV": 2},
        "test": {"MEL": 1, "NV": 2, "BKL": 1},
    },
    "isic2019": {
        "train": {"MEL": 3, "NV": 4, "BCC": 1, "AK": 1, "BKL": 1, "DF": 1, "VASC": 1, "SCC": 1}
    },
    "isic2020": {"train": {"melanoma": 3, "benign": 12}, "test": {"melanoma": 1, "benign": 3}},
}


def tiny_spec(dataset: str) -> dict:
    """Tiny counts and small images; isic2017 keeps one image per height band above 1000 px."""
    spec = {"counts": TINY_COUNTS[dataset], "min_height": 120, "max_height": 200}
    if dataset == "isic2017":
        spec["height_bands"] = [
            {"min_height": 1000, "max_height": 1100, "count": 1},
            {"min_height": 2000, "max_height": 2100, "count": 1},
        ]
    if dataset == "isic2020":
        spec["duplicates"] = 2
    return spec


@pytest.fixture(scope="session")
def tiny_archives(tmp_path_factory) -> Path:
    """Folder with ``<dataset>/`` holding the tiny synthetic twin of every dataset (read-only!)."""
    from melrepro.data.synthetic import write_synthetic_archive

    root = tmp_path_factory.mktemp("archives")
    for dataset in DATASETS:
        write_synthetic_archive(
            dataset,
            root / dataset,
            tiny_spec(dataset),
            seed=11,
            # isic2019 holds the task-2 twin's images (paper 004): the same tiny ones.
            task2_spec=tiny_spec("isic2018_task2") if dataset == "isic2019" else None,
        )
    return root


@pytest.fixture
def archive_copy(tiny_archives, tmp_path):
    """A writable copy of one dataset's tiny archives: ``archive_copy("isic2017")``."""

    def copy(dataset: str) -> Path:
        target = tmp_path / dataset
        shutil.copytree(tiny_archives / dataset, target)
        return target

    return copy


def twin_node_signals(levels: tuple[int, ...] = (20, 60)) -> list[np.ndarray]:
    """Node-signal matrices of twin lesions (melanoma, nevus, seborrheic keratosis) at ``levels``."""
    from melrepro.data.synthetic import draw
    from melrepro.methods.superpixels import node_signals, pixel_maps, superpixel_ensemble

    out = []
    spec = {"skin_tone_max": 1.0, "brightness_min": 0.8, "brightness_max": 1.1, "vignetting": 0.4,
            "hair": 0.3, "ruler": 0.0, "max_render_side": 256}  # fmt: skip
    for k, style in enumerate(("melanoma", "nevus", "seborrheic_keratosis")):
        rng = np.random.default_rng(100 + k)
        lesion = draw.sample_lesion(style, rng)
        img = draw.render(
            lesion, draw.sample_view(rng), draw.sample_scene(rng, 192, 144, spec)
        ).image
        maps = pixel_maps(img)
        for labels in superpixel_ensemble(img, levels, lab=maps.slic_lab).values():
            out.extend(node_signals(maps, labels).values())
    return out


def put_on_path(tmp_path: Path, monkeypatch, name: str, script: str) -> Path:
    """An executable ``name`` holding ``script``, first on PATH for this test (a fake CLI)."""
    import os
    import stat

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / name
    exe.write_text(script)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return exe
