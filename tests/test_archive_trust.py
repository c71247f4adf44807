"""What the data layer trusts and what it checks on every read (issue 21; docs/data_contract.md).

Archives are the tiny synthetic twin (conftest) with the verification stamp of the official
archives written over them, so that the checks run exactly as on downloaded files.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from melrepro.data import archive_io, download
from melrepro.data.archive_io import ArchiveFolder, IngestError
from melrepro.data.download import DownloadError, verify_archives
from melrepro.data.imagecache import cache_images
from melrepro.data.layouts import layout
from melrepro.data.manifests import (
    build_manifest,
    check_images,
    index_dataset,
    ingest_dataset,
    manifest_metadata,
)


def _verify(root: Path, dataset: str) -> None:
    """Write verified.json for ``root`` (a copy of the twin), recording a fresh lock."""
    lock = root.parent / f"{dataset}-lock.tsv"
    lock.write_text("dataset\tfile\tsha256\tbytes\n")
    if layout(dataset).folder:
        paths = [root / "images"]
    else:
        paths = [root / name for name in layout(dataset).files()]
    verify_archives(
        dataset, paths, root / "verified.json", checksums=lock, rejected_dir=root.parent / "rej"
    )


def _replace_keeping_mtime(path: Path, data: bytes) -> None:
    """What ``cp -p other_version path`` does: new bytes, the old mtime."""
    info = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def _rezip(path: Path, transform) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            target.writestr(info.filename, transform(info.filename, source.read(info)))
    return buffer.getvalue()


# ----------------------------------------------------------------------------- 21.4


def test_verified_archives_ingest_unchanged(archive_copy):
    """Check the stamp changes nothing for archives that are still the verified ones."""
    root = archive_copy("isic2019")
    before = index_dataset(root, "isic2019")
    _verify(root, "isic2019")
    assert index_dataset(root, "isic2019").equals(before)


def test_archive_replaced_with_mtime_kept_is_caught(archive_copy):
    """Check another version of a zip copied over the verified one with its mtime kept (cp -p)
    fails the next read, naming the file and verified.json (issue 21.4)."""
    root = archive_copy("isic2019")
    _verify(root, "isic2019")
    path = root / "ISIC_2019_Training_Input.zip"
    other = _rezip(path, lambda name, data: data[:-1] + bytes([data[-1] ^ 1]) if data else data)
    _replace_keeping_mtime(path, other)
    with pytest.raises(IngestError, match=r"ISIC_2019_Training_Input\.zip changed after it was"):
        check_images(root, "isic2019", 0, n_shards=1)


def test_same_size_other_content_with_mtime_kept_is_caught(archive_copy):
    """Check a CSV with the same size but other content (and the old mtime) is caught."""
    root = archive_copy("isic2019")
    _verify(root, "isic2019")
    path = root / "ISIC_2019_Training_GroundTruth.csv"
    text = path.read_bytes()
    _replace_keeping_mtime(path, text.replace(b"1.0,0.0", b"0.0,1.0", 1))
    assert len(path.read_bytes()) == len(text)
    with pytest.raises(IngestError, match="GroundTruth.csv changed after it was verified"):
        index_dataset(root, "isic2019")


def test_touched_but_identical_archive_is_accepted(archive_copy):
    """Check an mtime change alone is settled by the full hash (same bytes: accepted)."""
    root = archive_copy("isic2019")
    _verify(root, "isic2019")
    os.utime(root / "ISIC_2019_Training_Input.zip", ns=(1, 1))
    index_dataset(root, "isic2019")


def test_archive_melanoma_replaced_is_caught(archive_copy):
    """Check a plain file (an archive melanoma jpg) is compared by the hash of what is read."""
    root = archive_copy("isic_archive_melanoma")
    _verify(root, "isic_archive_melanoma")
    jpgs = sorted((root / "images").glob("*.jpg"))
    shutil.copy2(jpgs[1], jpgs[0])  # another image under the first one's name
    with pytest.raises(IngestError, match=rf"{jpgs[0].name} changed after it was verified"):
        check_images(root, "isic_archive_melanoma", 0, n_shards=1)


def test_fingerprint_hashes_both_ends(tmp_path, monkeypatch):
    """Check a large file's fingerprint covers its end, where a zip keeps its directory."""
    monkeypatch.setattr(archive_io, "SAMPLE_BYTES", 4)
    path = tmp_path / "f"
    path.write_bytes(b"0123456789abcdef")
    first = archive_io.file_fingerprint(path)
    path.write_bytes(b"0123456789abcdeX")
    assert archive_io.file_fingerprint(path)["sample_sha256"] != first["sample_sha256"]
    path.write_bytes(b"0123456X89abcdef")  # the middle is not sampled
    assert archive_io.file_fingerprint(path)["sample_sha256"] == first["sample_sha256"]


def test_unlisted_file_is_refused(archive_copy):
    """Check a file that verified.json does not list is not read."""
    root = archive_copy("isic2019")
    _verify(root, "isic2019")
    with ArchiveFolder(root) as archive, pytest.raises(IngestError, match="not listed"):
        archive.read("synthetic_truth/truth.csv")


# ----------------------------------------------------------------------------- 21.5


def test_member_inflating_beyond_the_bound_is_refused_before_inflating(archive_copy, monkeypatch):
    """Check a member whose declared size exceeds the bound is refused before it is inflated,
    naming archive and member (issue 21.5: a 7.8 MB zip inflating to 3 GiB)."""
    monkeypatch.setattr(archive_io, "MAX_MEMBER_BYTES", 2**20)
    root = archive_copy("isic2019")
    path = root / "ISIC_2019_Training_Input.zip"
    with zipfile.ZipFile(path) as source:
        victim = sorted(n for n in source.namelist() if n.endswith(".jpg"))[0]
    bomb = _rezip(path, lambda name, data: bytes(3 * 2**20) if name == victim else data)
    path.write_bytes(bomb)
    inflated = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(
        zipfile.ZipFile,
        "open",
        lambda self, name, *a, **k: inflated.append(name) or real_open(self, name, *a, **k),
    )
    with pytest.raises(IngestError, match=rf"member '{victim}' inflates to 3145728 bytes"):
        check_images(root, "isic2019", 0, n_shards=1)
    assert victim not in [getattr(n, "filename", n) for n in inflated]


def test_member_lying_about_its_size_is_stopped_while_inflating(tmp_path, monkeypatch):
    """Check a member declaring a small size cannot inflate beyond it (zipfile stops at the
    declared size and fails the CRC; the counted read is a second guard): an IngestError."""
    monkeypatch.setattr(archive_io, "MAX_MEMBER_BYTES", 2**20)
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("d/x.png", bytes(3 * 2**20))
    with ArchiveFolder(tmp_path) as folder:
        folder.zip("a.zip").getinfo("d/x.png").file_size = 10  # the directory lies
        with pytest.raises(IngestError, match=r"member 'd/x\.png'"):
            folder.read("a.zip::d/x.png")


# ----------------------------------------------------------------------------- 21.6


def _png(size=(4, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size).save(buffer, format="PNG")
    return buffer.getvalue()


def _huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (its data is a 1x1 image's)."""
    data = bytearray(_png((1, 1)))
    ihdr = 8 + 8  # signature, then length + b"IHDR"
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def _first_mask(root: Path) -> tuple[Path, str]:
    path = root / "ISIC-2017_Training_Part1_GroundTruth.zip"
    with zipfile.ZipFile(path) as archive:
        return path, sorted(n for n in archive.namelist() if n.endswith(".png"))[0]


@pytest.mark.parametrize(
    "corrupt",
    [lambda data: data[: len(data) // 2], lambda data: b"not a png at all", lambda data: None],
    ids=["truncated", "undecodable", "40000x40000"],
)
def test_bad_mask_names_archive_member_and_expectation(archive_copy, corrupt):
    """Check a truncated, undecodable or huge mask fails check_images naming the zip, the member
    and what was expected, not with a bare PIL traceback (issue 21.6)."""
    root = archive_copy("isic2017")
    path, victim = _first_mask(root)
    new = _rezip(
        path,
        lambda name, data: (
            (corrupt(data) or _huge_png_header(40000, 40000)) if name == victim else data
        ),
    )
    path.write_bytes(new)
    with pytest.raises(IngestError) as info:
        check_images(root, "isic2017", 0, n_shards=1)
    message = str(info.value)
    assert f"{path.name}::{victim}" in message or f"{path.name}/{victim}" in message, message
    assert "expected" in message
    assert "BytesIO" not in message


def test_empty_csv_is_named(archive_copy):
    """Check an empty CSV is an IngestError naming it, not pandas' EmptyDataError."""
    root = archive_copy("isic2019")
    (root / "ISIC_2019_Training_Metadata.csv").write_bytes(b"")
    with pytest.raises(IngestError, match=r"ISIC_2019_Training_Metadata\.csv: the file is empty"):
        index_dataset(root, "isic2019")


def test_cache_images_names_a_mask_it_cannot_decode(archive_copy, tmp_path):
    """Check cache_images names the member when a mask fails to decode (issue 21.6)."""
    root = archive_copy("isic2017")
    checks = check_images(root, "isic2017", 0, n_shards=1)
    manifest, _, _ = build_manifest(index_dataset(root, "isic2017"), checks)
    path, victim = _first_mask(root)
    path.write_bytes(
        _rezip(path, lambda name, data: data[: len(data) // 2] if name == victim else data)
    )
    manifest["shard"] = 0
    with pytest.raises(IngestError, match=rf"{re.escape(victim)}: cannot be decoded .*expected"):
        cache_images(manifest, root, 0, "sq32", tmp_path / "shard.npz")


# ----------------------------------------------------------------------------- 21.7


def _edit_csv(path: Path, edit) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(frame)
    frame.to_csv(path, index=False)


def test_duplicate_member_names_are_refused(archive_copy):
    """Check a zip holding one name twice is refused (the manifest would take the last)."""
    root = archive_copy("isic2019")
    path = root / "ISIC_2019_Training_Input.zip"
    with zipfile.ZipFile(path) as source:
        victim = sorted(n for n in source.namelist() if n.endswith(".jpg"))[0]
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "a") as target:
        target.writestr(victim, b"another image")
    with pytest.raises(IngestError, match=rf"member '{victim}' appears more than once"):
        index_dataset(root, "isic2019")


def test_metadata_cut_mid_row_is_refused(archive_copy):
    """Check a metadata CSV cut inside a row fails, naming file and row (ages were NA)."""
    root = archive_copy("isic2019")
    path = root / "ISIC_2019_Training_Metadata.csv"
    path.write_bytes(path.read_bytes().rstrip(b"\n").rsplit(b",", 3)[0] + b"\n")
    with pytest.raises(IngestError, match=r"Metadata\.csv, row \d+ .*fewer than the header"):
        index_dataset(root, "isic2019")


def test_metadata_cut_at_a_row_boundary_is_counted(archive_copy, tmp_path):
    """Check images left without a metadata row are counted in the manifest's metadata."""
    root = archive_copy("isic2019")
    path = root / "ISIC_2019_Training_Metadata.csv"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2]))
    checks = tmp_path / "checks.parquet"
    check_images(root, "isic2019", 0, n_shards=1).to_parquet(checks)
    ingest_dataset(
        root, "isic2019", [checks], tmp_path / "m.parquet", tmp_path / "q.csv", n_shards=1
    )
    assert manifest_metadata(tmp_path / "m.parquet")["warnings"] == {"images_without_metadata": 2}


def test_good_manifest_has_no_warnings_key(archive_copy, tmp_path):
    """Check the manifest metadata of good input is exactly as before (no warnings key)."""
    root = archive_copy("isic2019")
    checks = tmp_path / "checks.parquet"
    check_images(root, "isic2019", 0, n_shards=1).to_parquet(checks)
    ingest_dataset(
        root, "isic2019", [checks], tmp_path / "m.parquet", tmp_path / "q.csv", n_shards=1
    )
    assert "warnings" not in manifest_metadata(tmp_path / "m.parquet")


@pytest.mark.parametrize(
    ("dataset", "file", "column"),
    [
        ("isic2019", "ISIC_2019_Training_Metadata.csv", "age_approx"),
        ("isic2020", "ISIC_2020_Training_GroundTruth_v2.csv", "age_approx"),
        ("isic2020", "ISIC_2020_Test_Metadata.csv", "age_approx"),
    ],
)
@pytest.mark.parametrize("age", ["-5", "1e400", "200"])
def test_implausible_age_is_refused(archive_copy, dataset, file, column, age):
    """Check an age of -5, 1e400 (inf) or 200 fails, naming the image (it was accepted)."""
    root = archive_copy(dataset)
    _edit_csv(root / file, lambda frame: frame.__setitem__(column, [age] * len(frame)))
    with pytest.raises(IngestError, match=rf"{dataset}: image '.*' has age .*expected 0 to 120"):
        index_dataset(root, dataset)


@pytest.mark.parametrize(
    ("dataset", "file"),
    [
        ("isic2019", "ISIC_2019_Training_Metadata.csv"),
        ("isic2020", "ISIC_2020_Training_GroundTruth_v2.csv"),
        ("isic_archive_melanoma", "images/metadata.csv"),
    ],
)
def test_unknown_sex_value_is_refused(archive_copy, dataset, file):
    """Check sex 'M' fails naming file, row and column instead of becoming NA."""
    root = archive_copy(dataset)
    path = root / file
    if "sex" not in pd.read_csv(path, nrows=0).columns:
        pytest.skip(f"the twin's {file} has no sex column")
    _edit_csv(path, lambda frame: frame.__setitem__("sex", ["M"] * len(frame)))
    if dataset == "isic_archive_melanoma":
        (root / "verified.json").unlink(missing_ok=True)
    with pytest.raises(IngestError, match=r"row 1 \(line 2\), column 'sex': 'M'; expected male"):
        index_dataset(root, dataset)


def test_isic2019_metadata_row_without_image_is_refused(archive_copy):
    """Check a metadata row for an image in no zip fails for ISIC 2019 as for HAM10000."""
    root = archive_copy("isic2019")
    path = root / "ISIC_2019_Training_Metadata.csv"
    lines = path.read_text().splitlines()
    extra = "ISIC_9999999," + lines[1].split(",", 1)[1]
    path.write_text("\n".join([*lines, extra]) + "\n")
    with pytest.raises(IngestError, match=r"metadata for 'ISIC_9999999', which is in no image"):
        index_dataset(root, "isic2019")


@pytest.mark.parametrize("bad", ["../../../etc/passwd", "/tmp/x", "ISIC_12"])
def test_archive_melanoma_ids_must_be_isic_ids(archive_copy, bad):
    """Check ids from the melanomas' metadata.csv are ISIC ids before any path is built."""
    root = archive_copy("isic_archive_melanoma")
    path = root / "images" / "metadata.csv"
    _edit_csv(path, lambda frame: frame.__setitem__("isic_id", [bad, *frame["isic_id"][1:]]))
    with pytest.raises(IngestError, match=r"column 'isic_id'.*expected an ISIC id"):
        index_dataset(root, "isic_archive_melanoma")
    with pytest.raises(DownloadError, match="not ISIC ids"):
        download._melanoma_files(root / "images", limit=1)


# ----------------------------------------------------------------------------- 21.8


def test_quarantine_list_of_a_failed_ingest_survives_and_is_named(archive_copy, tmp_path):
    """Check the list of undecodable images goes where the failed job's clean-up cannot delete
    it, the message names that file, and no Pillow buffer repr is in it (issue 21.8)."""
    root = archive_copy("isic2020")
    path = root / "ISIC_2020_Training_JPEG.zip"
    with zipfile.ZipFile(path) as source:
        victim = sorted(n for n in source.namelist() if n.endswith(".jpg"))[0]
    path.write_bytes(_rezip(path, lambda name, data: b"garbage" if name == victim else data))
    checks = tmp_path / "checks.parquet"
    check_images(root, "isic2020", 0, n_shards=1).to_parquet(checks)
    outputs = tmp_path / "results"
    listing = tmp_path / "logs" / "ingest_dataset" / "isic2020.quarantine.csv"
    with pytest.raises(IngestError) as info:
        ingest_dataset(
            root,
            "isic2020",
            [checks],
            outputs / "manifest.parquet",
            outputs / "quarantine.csv",
            n_shards=1,
            failed_listing=listing,
        )
    shutil.rmtree(outputs, ignore_errors=True)  # Snakemake removes a failed job's outputs
    assert f"listed in {listing}" in str(info.value)
    assert "BytesIO" not in str(info.value)
    assert Path(victim).stem in listing.read_text()


def test_messages_show_numbers_plainly(archive_copy):
    """Check a bad target reads `2`, not `np.int64(2)`."""
    root = archive_copy("isic2020")
    _edit_csv(
        root / "ISIC_2020_Training_GroundTruth_v2.csv",
        lambda frame: frame.__setitem__("target", ["2"] * len(frame)),
    )
    with pytest.raises(IngestError, match=r"column 'target': 2; expected 0 or 1") as info:
        index_dataset(root, "isic2020")
    assert "np." not in str(info.value)


# ----------------------------------------------------------------------------- 21.9


def test_run_info_records_local_paths_relative_or_by_name(tmp_path):
    """Check run_info.json does not record the user's absolute archive_dir (issue 21.9)."""
    from melrepro.report.runinfo import run_info

    config = {
        "source": "isic",
        "archive_dir": str(tmp_path / "my" / "archives"),
        "checksums": "config/archive_checksums.tsv",
    }
    info = run_info(data_source="isic", config=config)
    assert info["config"]["archive_dir"] == "archives"
    assert info["config"]["checksums"] == "config/archive_checksums.tsv"
    same = {"source": "isic", "archive_dir": None, "checksums": "config/archive_checksums.tsv"}
    assert run_info(data_source="isic", config=same)["config"] == same  # the default: unchanged
