"""Reading files out of one dataset's archive folder: zips (safely), plain files, checked CSVs."""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import logging
import re
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from melrepro.data.layouts import CsvSpec

__all__ = [
    "MAX_IMAGE_PIXELS",
    "MAX_MEMBER_BYTES",
    "VERIFIED",
    "ArchiveFolder",
    "IngestError",
    "at_row",
    "file_fingerprint",
    "first_row",
    "describe_error",
    "read_checked_csv",
    "split_uri",
]

logger = logging.getLogger(__name__)

URI_SEPARATOR = "::"
#: The stamp verify_archives writes next to a dataset's official files.
VERIFIED = "verified.json"
#: The largest official images are about 6000x4000 px (ISIC 2017 and 2020 hold some of ~6700x4500).
#: Twice that in each dimension is far beyond any official image: a bigger one is refused before
#: it is decoded (Pillow would otherwise allocate width x height x channels bytes).
MAX_IMAGE_PIXELS = 8192 * 8192
#: No member of an official archive (image, mask or CSV) is larger than an uncompressed 8-bit RGB
#: image of MAX_IMAGE_PIXELS (192 MiB): a member that inflates beyond this (a zip bomb) is refused
#: before inflating (ZipInfo.file_size) and while inflating (the declared size can lie).
MAX_MEMBER_BYTES = 3 * MAX_IMAGE_PIXELS + 2**20
#: Bytes hashed at each end of a file for its cheap fingerprint (the whole file when smaller).
SAMPLE_BYTES = 2**20


def file_fingerprint(path: str | Path) -> dict[str, object]:
    """``bytes``, ``mtime_ns`` and ``sample_sha256`` of a file (symlinks followed).

    ``sample_sha256`` hashes the first and last :data:`SAMPLE_BYTES` (a zip's central directory
    is at its end), so it costs two reads whatever the size: another version of an archive
    copied over it with its mtime kept (``cp -p``) is caught without hashing gigabytes.
    """
    path = Path(path)
    info = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        if info.st_size <= 2 * SAMPLE_BYTES:
            digest.update(fh.read())
        else:
            digest.update(fh.read(SAMPLE_BYTES))
            fh.seek(-SAMPLE_BYTES, io.SEEK_END)
            digest.update(fh.read(SAMPLE_BYTES))
    return {
        "bytes": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        "sample_sha256": digest.hexdigest(),
    }


def describe_error(error: BaseException) -> str:
    """``"<Type>: <message>"`` without the in-memory buffer Pillow names (``<_io.BytesIO ...>``)."""
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(error)).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _full_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(8 * 2**20):
            digest.update(block)
    return digest.hexdigest()


class IngestError(ValueError):
    """Bad input in an archive: the message names the file (and row/column) and what was expected."""


def first_row(mask) -> int:
    """Position of the first true value of a boolean Series or array (missing counts as false)."""
    values = pd.Series(mask, dtype="boolean").fillna(False).to_numpy(dtype=bool)
    return int(np.flatnonzero(values)[0])


def at_row(where: str, position: int, column: str | None = None) -> str:
    """``"<file>, row R (line L)[, column 'c']"``: R counts data rows, L file lines (header = 1)."""
    text = f"{where}, row {position + 1} (line {position + 2})"
    return text if column is None else f"{text}, column {column!r}"


def split_uri(uri: str) -> tuple[str, str | None]:
    """``"a.zip::dir/x.jpg"`` -> ``("a.zip", "dir/x.jpg")``; a plain path -> ``(path, None)``."""
    if URI_SEPARATOR in uri:
        file, member = uri.split(URI_SEPARATOR, 1)
        return file, member
    return uri, None


def _check_member_name(zip_path: Path, name: str) -> None:
    # Zip-slip: a member that would land outside the archive root if unpacked is a sign of a
    # tampered or broken archive. We never unpack, but we refuse to index such an archive.
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and pure.parts[0].endswith(":")):
        raise IngestError(
            f"{zip_path}: member {name!r} points outside the archive root "
            "(absolute path or '..'); expected relative paths under the official folder"
        )


class ArchiveFolder:
    """The files of one dataset under ``resources/archives/<dataset>/``.

    Zips are opened once and kept open; every member name is checked for zip-slip when the
    zip is first opened, and a truncated or corrupt zip raises :class:`IngestError` naming it.

    When the folder holds ``verified.json`` (the official archives; the synthetic twin has none),
    every file is checked against it before its first read: size, mtime and the hash of both
    ends (:func:`file_fingerprint`); when only the mtime differs the whole file is hashed and
    compared with the verified SHA-256. A plain file (an archive melanoma jpg or its CSV) is
    compared by the SHA-256 of the bytes read. A file that differs, or is not listed, raises
    :class:`IngestError`: the archives changed after they were verified.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._zips: dict[str, zipfile.ZipFile] = {}
        self._checked: set[str] = set()
        #: Counted warnings (``images_without_metadata``...), recorded in the manifest.
        self.warnings: dict[str, int] = {}
        self._verified: dict[str, dict] | None = None
        stamp = self.root / VERIFIED
        if stamp.is_file():
            try:
                report = json.loads(stamp.read_text(encoding="utf-8"))
                self._verified = {entry["file"]: entry for entry in report["files"]}
            except (ValueError, KeyError, TypeError) as error:
                raise IngestError(
                    f"{stamp}: not a verified.json written by verify_archives ({error}); "
                    "delete it so that verify_archives runs again"
                ) from None

    def warn(self, key: str, count: int, message: str) -> None:
        """Count ``count`` under ``key`` and log ``message`` (a warning kept in the manifest)."""
        self.warnings[key] = self.warnings.get(key, 0) + count
        logger.warning("%s", message)

    def _changed(self, name: str, detail: str) -> IngestError:
        return IngestError(
            f"{self.path(name)} changed after it was verified ({detail}; see "
            f"{self.root / VERIFIED}). Put the verified file back, or delete {VERIFIED} and "
            "rerun so that verify_archives checks the new file against the checksum lock"
        )

    def _entry(self, name: str) -> dict | None:
        if self._verified is None:
            return None
        entry = self._verified.get(name)
        if entry is None:
            raise IngestError(
                f"{self.path(name)} is not listed in {self.root / VERIFIED}; expected only "
                "verified official files"
            )
        return entry

    def _check_file(self, name: str) -> None:
        """Check a file against verified.json (once per file and ArchiveFolder)."""
        entry = self._entry(name)
        if entry is None or name in self._checked:
            return
        path = self.path(name)
        now = file_fingerprint(path)
        if now["bytes"] != entry.get("bytes"):
            raise self._changed(name, f"{now['bytes']} bytes, verified {entry.get('bytes')}")
        if "sample_sha256" in entry and now["sample_sha256"] != entry["sample_sha256"]:
            raise self._changed(name, "same size, other content")
        if now["mtime_ns"] != entry.get("mtime_ns"):
            logger.info("%s: mtime differs from verified.json; hashing the whole file", path)
            actual = _full_sha256(path)
            if actual != entry.get("sha256"):
                raise self._changed(name, f"sha256 {actual}, verified {entry.get('sha256')}")
        self._checked.add(name)

    def _check_bytes(self, name: str, data: bytes) -> None:
        entry = self._entry(name)
        if entry is None:
            return
        actual = hashlib.sha256(data).hexdigest()
        if len(data) != entry.get("bytes") or actual != entry.get("sha256"):
            raise self._changed(name, f"sha256 {actual}, verified {entry.get('sha256')}")

    def path(self, name: str) -> Path:
        return self.root / name

    def zip(self, name: str) -> zipfile.ZipFile:
        if name not in self._zips:
            path = self.path(name)
            if not path.exists():
                raise IngestError(f"{path}: archive file is missing")
            self._check_file(name)
            try:
                archive = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as error:
                raise IngestError(
                    f"{path}: not a readable zip ({error}); the file is truncated or corrupt: "
                    "download it again"
                ) from None
            names = archive.namelist()
            for member in names:
                _check_member_name(path, member)
            if len(set(names)) != len(names):
                seen: set[str] = set()
                twice = next(n for n in names if n in seen or seen.add(n))
                archive.close()
                raise IngestError(
                    f"{path}: member {twice!r} appears more than once; expected each name once "
                    "(a reader would silently take one of them)"
                )
            self._zips[name] = archive
        return self._zips[name]

    def members(self, zip_name: str, folder: str) -> list[str]:
        """Members of ``zip_name`` directly inside ``folder/`` (files only), sorted."""
        prefix = folder.rstrip("/") + "/"
        names = []
        for info in self.zip(zip_name).infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            if "/" in info.filename[len(prefix) :]:
                continue
            names.append(info.filename)
        return sorted(names)

    def read(self, uri: str) -> bytes:
        """The bytes of ``"<zip>::<member>"`` or of a plain file relative to the root."""
        file, member = split_uri(uri)
        if member is None:
            path = self.path(file)
            if not path.exists():
                raise IngestError(f"{path}: file is missing")
            size = path.stat().st_size
            if size > MAX_MEMBER_BYTES:
                raise IngestError(
                    f"{path}: {size} bytes; expected at most {MAX_MEMBER_BYTES} bytes (no official "
                    "image or CSV is that large)"
                )
            data = path.read_bytes()
            self._check_bytes(file, data)
            return data
        try:
            return self._read_member(file, member)
        except KeyError:
            raise IngestError(f"{self.path(file)}: member {member!r} is missing") from None
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise IngestError(
                f"{self.path(file)}: member {member!r} cannot be read ({error}); "
                "the zip is truncated or corrupt: download it again"
            ) from None

    def _read_member(self, file: str, member: str) -> bytes:
        """Inflate one member, refusing more than :data:`MAX_MEMBER_BYTES` (a zip bomb)."""
        archive = self.zip(file)
        info = archive.getinfo(member)
        limit = MAX_MEMBER_BYTES
        if info.file_size > limit:
            raise IngestError(
                f"{self.path(file)}: member {member!r} inflates to {info.file_size} bytes "
                f"({info.compress_size} compressed); expected at most {limit} bytes (no official "
                "image, mask or CSV is that large): the archive is corrupt or hostile"
            )
        chunks, total = [], 0
        with archive.open(info) as fh:
            while block := fh.read(2**20):
                total += len(block)
                if total > limit:
                    raise IngestError(
                        f"{self.path(file)}: member {member!r} inflates beyond {limit} bytes "
                        f"(it declares {info.file_size}); the archive is corrupt or hostile"
                    )
                chunks.append(block)
        return b"".join(chunks)

    def exists(self, uri: str) -> bool:
        file, member = split_uri(uri)
        if member is None:
            return self.path(file).exists()
        if not self.path(file).exists():
            return False
        return member in self.zip(file).NameToInfo

    def close(self) -> None:
        for archive in self._zips.values():
            archive.close()
        self._zips.clear()

    def __enter__(self) -> ArchiveFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _blank_to_na(values: pd.Series) -> pd.Series:
    """A text column with blank (empty or whitespace-only) fields as missing values.

    The CSVs are read with ``keep_default_na=False`` so that ids such as ``NA`` survive; a blank
    field is nevertheless no value (a blank site, lesion id or sex), and cleaning and grouped
    splits must see it as missing, not as an empty string.
    """
    text = values.astype("string")
    return text.mask(text.str.strip() == "")


def _parse_column(values: pd.Series, kind: str, where: str, column: str) -> pd.Series:
    nullable = kind.endswith("?")
    kind = kind.rstrip("?")
    if kind == "str":
        return _blank_to_na(values)
    blank = values.str.strip().isin(["", "nan", "NaN", "NA", "unknown"])
    parsed = pd.to_numeric(values.where(~blank), errors="coerce")
    bad = parsed.isna() & ~(blank & nullable)
    if bad.any():
        position = first_row(bad)
        expected = {"float": "a number", "int": "an integer"}[kind]
        if nullable:
            expected += " or empty"
        raise IngestError(
            f"{at_row(where, position, column)}: {values.iloc[position]!r} is not {expected}"
        )
    if kind == "int":
        if ((parsed.dropna() % 1) != 0).any():
            position = first_row((parsed % 1) != 0)
            raise IngestError(
                f"{at_row(where, position, column)}: {values.iloc[position]!r} is not an integer"
            )
        return parsed.astype("Int64")
    return parsed.astype("Float64")


def _check_field_counts(raw: bytes, where: str, width: int) -> None:
    """Refuse a row with fewer fields than the header (pandas would fill them in as empty).

    That is how a CSV cut inside its last row looks; ages and sites would silently be missing.
    """
    rows = csv.reader(io.StringIO(raw.decode("utf-8-sig", errors="replace")))
    next(rows, None)
    position = 0
    for row in rows:
        if not row:
            continue
        if len(row) < width:
            raise IngestError(
                f"{at_row(where, position)}: {len(row)} field(s), fewer than the header's "
                f"{width}; the file is cut short or corrupt"
            )
        position += 1


def read_checked_csv(archive: ArchiveFolder, spec: CsvSpec) -> pd.DataFrame | None:
    """Read an official CSV and check its header, ids and column types.

    Returns ``None`` for an absent optional file. Columns listed in ``spec.dtypes`` are parsed to
    their type; every other column is kept as a string.

    Raises
    ------
    IngestError
        A missing file, a missing or renamed column (with the closest name found), a duplicate
        id, or a value of the wrong type (with its row and column).
    """
    where = str(archive.path(spec.file.split("::")[0]))
    if "::" in spec.file:
        where += f" (member {spec.file.split('::', 1)[1]})"
    if not archive.exists(spec.file):
        if spec.optional:
            return None
        raise IngestError(f"{where}: file is missing")
    raw = archive.read(spec.file)
    try:
        frame = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise IngestError(
            f"{where}: the file is empty; expected a CSV with the columns {list(spec.columns)}"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise IngestError(f"{where}: not a readable CSV ({error})") from None
    _check_field_counts(raw, where, len(frame.columns))
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in spec.columns if c not in frame.columns]
    if missing:
        hints = []
        for column in missing:
            close = difflib.get_close_matches(column, list(frame.columns), n=1)
            hints.append(f"{column!r}" + (f" (found {close[0]!r}: renamed?)" if close else ""))
        raise IngestError(
            f"{where}: missing column(s) {', '.join(hints)}; expected the columns "
            f"{list(spec.columns)}, found {list(frame.columns)}"
        )
    ids = frame[spec.id_column]
    duplicated = ids.duplicated()
    if duplicated.any():
        position = first_row(duplicated)
        raise IngestError(
            f"{at_row(where, position, spec.id_column)}: "
            f"duplicate id {ids.iloc[position]!r}; expected one row per image"
        )
    empty = ids.str.strip() == ""
    if empty.any():
        position = first_row(empty)
        raise IngestError(
            f"{at_row(where, position, spec.id_column)}: empty id; expected an image name"
        )
    for column, kind in spec.dtypes.items():
        if column in frame.columns:
            frame[column] = _parse_column(frame[column], kind, where, column)
    for column in frame.columns:
        if column not in spec.dtypes:
            frame[column] = _blank_to_na(frame[column])
    return frame
