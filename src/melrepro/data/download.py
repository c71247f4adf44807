"""Fetch the official ISIC archives safely: resumable downloads checked against a SHA-256 lock.

Every official file of DESIGN.md section 1 reaches ``resources/archives/<dataset>/`` through one of
three doors, and each of them ends at the same gate, the checksum lock
(``config/archive_checksums.tsv``, columns ``dataset, file, sha256, bytes``):

* :func:`download_archive_file` downloads into ``<file>.part`` (resuming it with an HTTP ``Range``
  request after a cut), retries with exponential back-off over the mirror list, and only renames
  the ``.part`` to the final name once its size and SHA-256 are right;
* :func:`link_archive_file` links (or copies) a file the user already has;
* :func:`download_archive_melanomas` runs ``isic image download`` for the extra archive melanomas.

ISIC publishes no checksums, so a file without an entry is *recorded* on first sight and reported
(in the log and in the returned :class:`ArchiveStatus`); the lock is meant to be committed. A file
whose hash differs from its entry is never left at its final name: it is kept aside as
``resources/rejected/<dataset>/<file>.rejected-<sha256[:12]>`` (outside every rule's output, so
Snakemake's clean-up of a failed job does not delete it) and :class:`ChecksumMismatchError` names
the file and both hashes. :func:`verify_archives` checks every file of a dataset again and writes the
``verified.json`` that ingest depends on, so a corrupt download never reaches ingest.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import http.client
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from melrepro import __version__
from melrepro.data.archive_io import file_fingerprint
from melrepro.data.layouts import ARCHIVE_HOSTS, DATAVERSE_NAMES, CsvSpec, layout
from melrepro.data.pinned_ids import check_pinned_ids, id_queries

__all__ = [
    "CHECKSUM_COLUMNS",
    "DATAVERSE_API",
    "HAM10000_DOI",
    "ArchiveStatus",
    "ChecksumMismatchError",
    "DownloadError",
    "check_official_file",
    "download_archive_file",
    "download_archive_melanomas",
    "isic_download_command",
    "link_archive_file",
    "portable_path",
    "read_checksums",
    "remote_urls",
    "sha256_file",
    "verify_archives",
]

logger = logging.getLogger(__name__)

#: Header of the checksum lock file.
CHECKSUM_COLUMNS = ("dataset", "file", "sha256", "bytes")
#: Harvard Dataverse, home of the HAM10000 metadata.
DATAVERSE_API = "https://dataverse.harvard.edu"
HAM10000_DOI = "doi:10.7910/DVN/DBW86T"
#: The folder ``isic image download`` writes into, relative to the dataset folder.
_MELANOMA_DATASET = "isic_archive_melanoma"

_USER_AGENT = f"melanoma-repro/{__version__} (+python-urllib)"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ISIC_ID = re.compile(r"ISIC_\d{7}")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")
#: HTTP codes after which a host is not asked again for this file.
_PERMANENT_HTTP = {400, 401, 403, 404, 405, 410, 451}


class DownloadError(RuntimeError):
    """A file could not be fetched from any of its addresses."""


class ChecksumMismatchError(RuntimeError):
    """A file's SHA-256 (or size) differs from its entry in the checksum lock.

    Attributes
    ----------
    file : str
        The official file name.
    expected, actual : str
        SHA-256 in the lock and of the file.
    kept : pathlib.Path
        Where the bad file is (kept aside, never deleted).
    """

    def __init__(self, file: str, expected: str, actual: str, kept: Path, detail: str = ""):
        self.file, self.expected, self.actual, self.kept = file, expected, actual, Path(kept)
        super().__init__(
            f"checksum mismatch for {file}: expected sha256 {expected}, got {actual}"
            f"{detail}; the file is kept aside at {kept}. If the archive really changed, "
            "delete its row from the checksum lock to record the new hash."
        )


@dataclass(frozen=True)
class ArchiveStatus:
    """What happened to one official file.

    ``status`` is ``"verified"`` (its hash matched the lock) or ``"recorded"`` (the lock had no
    entry: the hash was added, and the lock should be committed). ``source`` is the address or
    path it came from.
    """

    dataset: str
    file: str
    path: str
    sha256: str
    bytes: int
    status: str
    source: str = ""

    def to_dict(self) -> dict[str, object]:
        """The status as a JSON-ready dict."""
        return asdict(self)


# ----------------------------------------------------------------------------- checksum lock


def sha256_file(path: str | Path, *, chunk_mb: float = 8) -> tuple[str, int]:
    """Return the SHA-256 (hex) and size in bytes of ``path``, read in chunks of ``chunk_mb`` MiB."""
    digest = hashlib.sha256()
    size = 0
    chunk = max(1, int(chunk_mb * 2**20))
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _parse_checksums(text: str, path: Path) -> dict[tuple[str, str], tuple[str, int]]:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        # The committed lock always has its header: an existing file without one was emptied
        # (a write cut short by an old version, a full disk, an editor): reading it as "no
        # entries" would record whatever is downloaded next as the official hash.
        raise ValueError(
            f"{path}: the checksum lock is empty (no header line); it was truncated. Restore it "
            f"from git (`git checkout -- {path}`) or, for a new lock, write the header line "
            f"{chr(9).join(CHECKSUM_COLUMNS)!r}"
        )
    header = tuple(lines[0].split("\t"))
    if header != CHECKSUM_COLUMNS:
        raise ValueError(
            f"{path}: header is {header!r}, expected the tab-separated columns "
            f"{', '.join(CHECKSUM_COLUMNS)}"
        )
    entries: dict[tuple[str, str], tuple[str, int]] = {}
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(CHECKSUM_COLUMNS):
            raise ValueError(f"{path}, line {number}: expected 4 tab-separated fields: {line!r}")
        dataset, name, sha, size = fields
        if not _SHA256.match(sha) or not size.isdigit():
            raise ValueError(
                f"{path}, line {number}: sha256 must be 64 lower-case hex digits and bytes an "
                f"integer, got {sha!r} and {size!r}"
            )
        if (dataset, name) in entries and entries[dataset, name] != (sha, int(size)):
            raise ValueError(f"{path}, line {number}: {dataset}/{name} is listed twice")
        entries[dataset, name] = (sha, int(size))
    return entries


def _lock_file(path: Path) -> Path:
    """The companion file that ``flock`` serialises writers (and readers) of the lock on."""
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def _flocked(path: Path, mode: int) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(_lock_file(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)


def read_checksums(path: str | Path) -> dict[tuple[str, str], tuple[str, int]]:
    """Read the checksum lock: ``{(dataset, file): (sha256, bytes)}``; a missing file is empty.

    Raises
    ------
    ValueError
        If the file exists but is empty or has no header (it was truncated), the header is not
        ``dataset, file, sha256, bytes``, or a row is malformed (the message names the line).
    """
    path = Path(path)
    if not path.exists():
        return {}
    # Writers replace the file atomically: a reader sees the old or the new lock, no lock needed.
    return _parse_checksums(path.read_text(encoding="utf-8"), path)


def _format_checksums(entries: dict[tuple[str, str], tuple[str, int]]) -> str:
    rows = ["\t".join(CHECKSUM_COLUMNS)]
    rows += [f"{d}\t{f}\t{sha}\t{size}" for (d, f), (sha, size) in sorted(entries.items())]
    return "\n".join(rows) + "\n"


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old or the new file, never a part.

    A temporary file in the same folder is written and fsynced, then renamed over ``path``
    (``os.replace`` is atomic on POSIX), and the folder is fsynced so the rename survives a crash.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@contextlib.contextmanager
def _locked_checksums(path: Path) -> Iterator[dict[tuple[str, str], tuple[str, int]]]:
    """Hold an exclusive lock on the checksum file; what the caller adds is written back sorted.

    Several download jobs record new entries at the same time; ``flock`` on the companion
    ``<lock>.lock`` file serialises them. The lock itself is replaced atomically
    (:func:`_write_atomically`), so a job killed while writing, or a full disk, leaves the old
    lock intact, never an empty one.
    """
    with _flocked(path, fcntl.LOCK_EX):
        text = path.read_text(encoding="utf-8") if path.exists() else None
        entries = _parse_checksums(text, path) if text is not None else {}
        before = dict(entries)
        yield entries
        if entries != before or text is None:
            _write_atomically(path, _format_checksums(entries))


def _rejected_path(rejected_dir: Path, dataset: str, name: str, sha: str) -> Path:
    """``<rejected_dir>/<dataset>/<name>.rejected-<sha[:12]>``, folders created.

    ``rejected_dir`` lies outside every rule's output (``resources/rejected``), so the file
    survives Snakemake removing the outputs of the failed job.
    """
    kept = rejected_dir / dataset / f"{name}.rejected-{sha[:12]}"
    kept.parent.mkdir(parents=True, exist_ok=True)
    return kept


def _default_rejected_dir(dataset_dir: Path) -> Path:
    """``resources/rejected`` for ``resources/archives/<dataset>`` (two levels up)."""
    return dataset_dir.parent.parent / "rejected"


def _move(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; copy then delete across filesystems."""
    try:
        os.replace(source, target)
    except OSError:
        shutil.copyfile(source, target)
        source.unlink()


def _accept(
    dataset: str,
    name: str,
    candidate: Path,
    final: Path,
    *,
    sha: str,
    size: int,
    checksums: Path,
    source: str,
    rejected_dir: Path,
) -> ArchiveStatus:
    """Check ``candidate`` against the lock; move it to ``final`` or keep it aside and raise.

    A missing entry is recorded. On a mismatch ``candidate`` is moved to
    ``<rejected_dir>/<dataset>/<name>.rejected-<sha[:12]>`` (never deleted), so nothing is left
    at the final name.
    """
    with _locked_checksums(checksums) as entries:
        expected = entries.get((dataset, name))
        if expected is None:
            entries[dataset, name] = (sha, size)
            status = "recorded"
        elif expected == (sha, size):
            status = "verified"
        else:
            kept = _rejected_path(rejected_dir, dataset, name, sha)
            _move(candidate, kept)
            detail = f" ({size} bytes, lock says {expected[1]})" if size != expected[1] else ""
            raise ChecksumMismatchError(name, expected[0], sha, kept, detail)
    if candidate != final:
        os.replace(candidate, final)
    if status == "recorded":
        logger.warning(
            "NEW CHECKSUM: %s/%s had no entry in %s; recorded sha256=%s bytes=%d. "
            "Commit the lock file so later downloads are verified against it.",
            dataset,
            name,
            checksums,
            sha,
            size,
        )
    else:
        logger.info("%s/%s verified against %s (sha256=%s)", dataset, name, checksums, sha)
    return ArchiveStatus(dataset, name, str(final), sha, size, status, source)


def _csv_specs(dataset: str) -> list[CsvSpec]:
    lay = layout(dataset)
    specs = [s for i in lay.image_sets for s in (i.labels, i.metadata) if s is not None]
    return specs + list(lay.extra_csvs)


def _zip_folders(dataset: str, name: str) -> list[str]:
    """The official folders inside zip ``name`` (each must hold at least one file)."""
    folders = []
    for image_set in layout(dataset).image_sets:
        for zip_name, folder in (
            (image_set.image_zip, image_set.image_folder),
            (image_set.mask_zip, image_set.mask_folder),
            (image_set.attribute_zip, image_set.attribute_folder),
        ):
            if zip_name == name and folder:
                folders.append(folder)
    return sorted(set(folders))


def _check_csv_text(data: bytes, spec: CsvSpec, where: str) -> None:
    """Raise unless ``data`` is a CSV with the layout's columns and no short (cut) row."""
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        raise DownloadError(
            f"{where} is an HTML/XML page, not a CSV (an error or login page answered with "
            f"HTTP 200?); expected the columns {list(spec.columns)}"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DownloadError(f"{where} is not UTF-8 text ({error}); expected a CSV") from None
    rows = csv.reader(io.StringIO(text))
    header = [c.strip() for c in next(rows, [])]
    missing = [c for c in spec.columns if c not in header]
    if missing:
        raise DownloadError(
            f"{where}: header {header[:12]!r} lacks the column(s) {missing}; expected the "
            f"columns {list(spec.columns)} of the official file"
        )
    count = 0
    for number, row in enumerate(rows, start=2):
        if not row:
            continue
        count += 1
        if len(row) != len(header):
            raise DownloadError(
                f"{where}, line {number}: {len(row)} field(s), the header has {len(header)}; "
                "the file is cut short or corrupt"
            )
    if not count:
        raise DownloadError(f"{where}: no data rows; expected one row per image")


def check_official_file(dataset: str, name: str, path: str | Path) -> None:
    """Raise :class:`DownloadError` unless ``path`` looks like the official file ``name``.

    Run before a file is recorded in (or accepted by) the lock, so that nothing ingest would
    reject becomes the official hash: a zip must have a readable central directory and a file in
    each of its official folders (and its official CSV members); a CSV must be UTF-8 text, not an
    HTML page, with the layout's columns and no row shorter than the header (a cut file); an
    archive melanoma ``.jpg`` must start like a JPEG. The read is cheap: the zip's directory, a
    CSV's text, a jpg's first bytes (member CRCs and pixels are checked by ingest).
    """
    path = Path(path)
    where = f"{dataset}/{name} ({path})"
    specs = {spec.file: spec for spec in _csv_specs(dataset)}
    if name.lower().endswith(".zip"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if not names:
                    raise zipfile.BadZipFile("the archive is empty")
                for folder in _zip_folders(dataset, name):
                    if not any(n.startswith(folder + "/") and not n.endswith("/") for n in names):
                        raise DownloadError(
                            f"{where} has no file in the official folder {folder + '/'!r}; "
                            "expected the official archive"
                        )
                for file, spec in specs.items():
                    zip_name, _, member = file.partition("::")
                    if zip_name != name or not member:
                        continue
                    if member not in names:
                        if spec.optional:
                            continue
                        raise DownloadError(f"{where} has no member {member!r}")
                    _check_csv_text(archive.read(member), spec, f"{where}::{member}")
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise DownloadError(f"{name} is not a readable zip archive ({error})") from error
    elif name in specs:
        _check_csv_text(path.read_bytes(), specs[name], where)
    elif name.lower().endswith((".jpg", ".jpeg")):
        with path.open("rb") as fh:
            if fh.read(2) != b"\xff\xd8":
                raise DownloadError(f"{where} does not start like a JPEG; expected an image")


# ----------------------------------------------------------------------------- addresses


def _dataverse_file_url(api: str, doi: str, name: str, *, timeout_s: float) -> str | None:
    """Look ``name`` up in a Dataverse dataset and return its download address, or None.

    Dataverse names files by opaque ids and stores tabular uploads as ``.tab`` with the original
    CSV kept aside, so the listing is matched on the original name or the stem.
    """
    query = urllib.parse.urlencode({"persistentId": doi})
    listing = (
        f"{api.rstrip('/')}/api/datasets/:persistentId/versions/:latest-published/files?{query}"
    )
    request = urllib.request.Request(listing, headers={"User-Agent": _USER_AGENT})
    try:
        with _urlopen(request, timeout=timeout_s) as response:
            files = json.load(response)["data"]
    except (OSError, http.client.HTTPException, ValueError, KeyError) as error:
        logger.warning("could not list Dataverse dataset %s at %s: %s", doi, api, error)
        return None
    stem = Path(name).stem
    for entry in files:
        data = entry.get("dataFile", {})
        names = {data.get("filename"), data.get("originalFileName"), entry.get("label")}
        if name in names or stem in {Path(str(n)).stem for n in names if n}:
            tabular = str(data.get("filename", "")).endswith(".tab")
            suffix = "?format=original" if tabular else ""
            return f"{api.rstrip('/')}/api/access/datafile/{data['id']}{suffix}"
    logger.warning("Dataverse dataset %s lists no file named %s", doi, name)
    return None


def remote_urls(
    dataset: str,
    name: str,
    *,
    hosts: Sequence[str] | None = None,
    dataverse_api: str | None = DATAVERSE_API,
    timeout_s: float = 60,
) -> list[str]:
    """The addresses of one official file, in the order they are tried.

    Parameters
    ----------
    dataset, name : str
        Dataset key and official file name (``layouts.layout(dataset).files()``).
    hosts : sequence of str, optional
        Base addresses containing ``{year}`` (default ``layouts.ARCHIVE_HOSTS``: current host,
        then the old one as a mirror).
    dataverse_api : str or None
        Dataverse server used to resolve the HAM10000 files by name; None skips the look-up
        (only the address in :mod:`melrepro.data.layouts` and the hosts are then tried).
    timeout_s : float
        Timeout of the Dataverse look-up.

    Raises
    ------
    ValueError
        If ``name`` is not an official file of ``dataset`` (the message lists them).
    """
    lay = layout(dataset)
    official = {} if lay.folder else {remote.name: remote for remote in lay.remote_files()}
    if name not in official:
        raise ValueError(
            f"{name!r} is not an official downloadable file of {dataset}; expected one of: "
            f"{', '.join(sorted(official)) or 'none (use download_archive_melanomas)'}"
        )
    bases = [h.format(year=lay.year) for h in (hosts or ARCHIVE_HOSTS)]
    if not name.startswith("HAM10000_"):
        return [base + name for base in bases]
    # HAM10000 lives on Dataverse; challenge hosts (or a user's mirror) are a last resort.
    urls = []
    if dataverse_api:
        remote_name = DATAVERSE_NAMES.get(name, name)
        resolved = _dataverse_file_url(
            dataverse_api, HAM10000_DOI, remote_name, timeout_s=timeout_s
        )
        if resolved:
            urls.append(resolved)
    urls += list(official[name].urls) + [base + name for base in bases]
    return list(dict.fromkeys(urls))


# ----------------------------------------------------------------------------- HTTP


class _NoDowngradeRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects, except from https to anything but https (a cleartext downgrade)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        old = urllib.parse.urlsplit(req.full_url).scheme
        new = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl)).scheme
        if old == "https" and new != "https":
            raise urllib.error.HTTPError(
                req.full_url,
                403,
                f"refused redirect from https to {new}: {newurl}",
                headers,
                fp,
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_NoDowngradeRedirect)


def _urlopen(request: urllib.request.Request, timeout: float):
    return _OPENER.open(request, timeout=timeout)


class _IncompleteTransferError(OSError):
    """The connection ended before the announced number of bytes arrived."""


def _fetch_once(url: str, part: Path, *, name: str, timeout_s: float, chunk: int) -> None:
    """One request for ``url``, appending to ``part`` from its current size (``Range``).

    Returns when the whole file is in ``part``; raises ``_IncompleteTransferError`` after a cut
    (``part`` keeps what arrived, for the next attempt to resume), ``HTTPError`` on an HTTP error.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = _urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            error.close()
            found = _UNSATISFIED_RANGE.search(error.headers.get("Content-Range", ""))
            if found and int(found.group(1)) == offset:
                logger.info("%s: the partial file is already complete (%d bytes)", name, offset)
                return
            logger.warning("%s: server refused to resume at byte %d; starting again", name, offset)
            part.unlink()
            raise _IncompleteTransferError(f"{url}: range not satisfiable") from error
        raise
    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None else None
        if offset and response.status == 206:
            found = _CONTENT_RANGE.search(response.headers.get("Content-Range", ""))
            if not found or int(found.group(1)) != offset:
                part.unlink()
                raise _IncompleteTransferError(f"{url}: unexpected Content-Range; starting again")
            total = None if found.group(3) == "*" else int(found.group(3))
            mode = "ab"
            logger.info("%s: resuming at byte %d from %s", name, offset, url)
        else:
            if offset:
                logger.info("%s: %s does not resume; starting again from byte 0", name, url)
            offset, total, mode = 0, length, "wb"
            logger.info("%s: downloading from %s (%s bytes)", name, url, total or "unknown")
        if length is None:
            logger.warning(
                "%s: %s sent no Content-Length; completeness rests on the lock", name, url
            )
        received = 0
        with (
            part.open(mode) as fh,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=name,
                disable=None,
            ) as bar,
        ):
            while block := response.read(chunk):
                fh.write(block)
                received += len(block)
                bar.update(len(block))
    if length is not None and received < length:
        raise _IncompleteTransferError(
            f"{url}: connection closed after {received} of {length} bytes"
        )
    if total is not None and offset + received != total:
        raise _IncompleteTransferError(f"{url}: have {offset + received} of {total} bytes")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _fetch(
    urls: Sequence[str],
    part: Path,
    *,
    name: str,
    retries: int,
    timeout_s: float,
    backoff_s: float,
    chunk_mb: float,
) -> str:
    """Fetch into ``part`` from the first address that works; return that address.

    Each round tries every address still alive in order; after a failed round it waits
    ``backoff_s * 2**round`` seconds, for ``retries`` more rounds. A permanent HTTP error (404...)
    retires an address. A cut or timeout that still moved the file forward is resumed on the same
    address first (up to ``retries`` times per file), so one file's bytes normally come from one
    host; ``part`` is kept either way, and a later run resumes it.
    """
    chunk = max(1, int(chunk_mb * 2**20))
    errors: list[str] = []
    alive = list(urls)
    resumes = 0
    for attempt in range(retries + 1):
        for url in list(alive):
            while True:
                before = _size(part)
                try:
                    _fetch_once(url, part, name=name, timeout_s=timeout_s, chunk=chunk)
                except urllib.error.HTTPError as error:
                    error.close()
                    errors.append(f"{url}: HTTP {error.code} {error.reason}")
                    if error.code in _PERMANENT_HTTP:
                        alive.remove(url)
                except (OSError, http.client.HTTPException) as error:
                    # URLError, timeouts, resets and cuts are all OSErrors: worth another try.
                    errors.append(f"{url}: {type(error).__name__}: {error}")
                    if _size(part) > before and resumes < retries:
                        resumes += 1
                        logger.warning(
                            "%s: %s; resuming (%d of %d)", name, errors[-1], resumes, retries
                        )
                        if backoff_s:
                            time.sleep(backoff_s)
                        continue
                else:
                    return url
                break
            logger.warning("%s (round %d of %d): %s", name, attempt + 1, retries + 1, errors[-1])
        if not alive or attempt == retries:
            break
        wait = backoff_s * 2**attempt
        if wait:
            logger.info("%s: waiting %.1f s before trying again", name, wait)
            time.sleep(wait)
    kept = f"; {_size(part)} bytes kept in {part} for the next run" if part.exists() else ""
    raise DownloadError(
        f"could not download {name} from {len(urls)} address(es){kept}. Errors: "
        + "; ".join(errors[-2 * len(urls) :])
    )


# ----------------------------------------------------------------------------- public functions


def download_archive_file(
    dataset: str,
    name: str,
    out: str | Path,
    *,
    checksums: str | Path,
    hosts: Sequence[str] | None = None,
    retries: int = 5,
    timeout_s: float = 60,
    backoff_s: float = 2,
    chunk_mb: float = 8,
    dataverse_api: str | None = DATAVERSE_API,
    rejected_dir: str | Path | None = None,
) -> ArchiveStatus:
    """Download one official file to ``out``, resuming, retrying and checking it against the lock.

    The bytes go to ``<out>.part``; a cut connection is resumed with a ``Range`` request, on the
    same host or the next mirror. Once the announced size has arrived (and a zip's central
    directory reads), the SHA-256 is compared with ``checksums``: a missing entry is recorded
    (``status="recorded"``), a match gives ``status="verified"``, and only then is the file
    renamed to ``out``.

    Parameters
    ----------
    dataset, name : str
        Dataset key and official file name.
    out : path
        Final path, normally ``resources/archives/<dataset>/<name>``.
    checksums : path
        The checksum lock (``config/archive_checksums.tsv``).
    hosts : sequence of str, optional
        Base addresses with ``{year}``, tried in order (default ``layouts.ARCHIVE_HOSTS``).
    retries : int
        Extra rounds over the address list after the first one.
    timeout_s : float
        Socket timeout in seconds.
    backoff_s : float
        Wait after the first failed round; doubles each round.
    chunk_mb : float
        Read size in MiB.
    dataverse_api : str or None
        Dataverse server for the HAM10000 metadata (see :func:`remote_urls`).
    rejected_dir : path, optional
        Where a bad file is kept aside, outside every rule's output (default
        ``resources/rejected``, two levels above ``out``'s folder).

    Returns
    -------
    ArchiveStatus

    Raises
    ------
    DownloadError
        If no address delivered the whole file (the ``.part`` is kept for the next run), or a zip
        is unreadable (it is kept aside as ``.rejected-…``).
    ChecksumMismatchError
        If the hash differs from the lock; the file is kept aside as
        ``<rejected_dir>/<dataset>/<name>.rejected-<sha256[:12]>`` and nothing is left at ``out``.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rejected = Path(rejected_dir) if rejected_dir else _default_rejected_dir(out.parent)
    part = out.with_name(out.name + ".part")
    urls = remote_urls(dataset, name, hosts=hosts, dataverse_api=dataverse_api, timeout_s=timeout_s)
    source = _fetch(
        urls,
        part,
        name=name,
        retries=retries,
        timeout_s=timeout_s,
        backoff_s=backoff_s,
        chunk_mb=chunk_mb,
    )
    sha, size = sha256_file(part, chunk_mb=chunk_mb)
    try:
        check_official_file(dataset, name, part)
    except DownloadError:
        kept = _rejected_path(rejected, dataset, name, sha)
        _move(part, kept)
        logger.exception("%s: kept aside at %s", name, kept)
        raise
    return _accept(
        dataset,
        name,
        part,
        out,
        sha=sha,
        size=size,
        checksums=Path(checksums),
        source=source,
        rejected_dir=rejected,
    )


def portable_path(path: str | Path) -> str:
    """``path`` for a provenance record: relative to the project (the working directory) when
    inside it, else its name only, so that no local absolute path is written into outputs."""
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name


def _find_in_archive_dir(archive_dir: Path, dataset: str, name: str) -> Path:
    candidates = [archive_dir / dataset / name, archive_dir / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{name} of {dataset} is not in archive_dir: looked for "
        + " and ".join(str(c) for c in candidates)
        + ". Put the official file there, or unset data.archive_dir to download it."
    )


def _link_or_copy(source: Path, target: Path, *, chunk_mb: float) -> tuple[str, int]:
    """Symlink ``target`` to ``source`` (or copy it when a symlink is impossible); hash the bytes."""
    target.unlink(missing_ok=True)
    try:
        target.symlink_to(source.resolve())
    except OSError as error:
        logger.warning("cannot symlink %s (%s); copying it instead", source, error)
        part = target.with_name(target.name + ".part")
        shutil.copyfile(source, part)
        os.replace(part, target)
    return sha256_file(target, chunk_mb=chunk_mb)


def link_archive_file(
    dataset: str,
    name: str,
    out: str | Path,
    *,
    archive_dir: str | Path,
    checksums: str | Path,
    chunk_mb: float = 8,
    rejected_dir: str | Path | None = None,
) -> ArchiveStatus:
    """Link an official file the user already has into ``out``, with the same check as a download.

    ``archive_dir`` holds the official files either under ``<dataset>/`` or flat. The user's file
    is never moved or changed: on a mismatch only the link is kept aside (as
    ``<rejected_dir>/<dataset>/<name>.rejected-<sha256[:12]>``, pointing at the user's file).

    Raises
    ------
    FileNotFoundError
        If the file is in neither place (the message lists both).
    ChecksumMismatchError
        If its hash differs from the lock.
    """
    layout_files = layout(dataset).files()
    if name not in layout_files:
        raise ValueError(f"{name!r} is not an official file of {dataset}: {layout_files}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    archive_dir = Path(archive_dir)
    source = _find_in_archive_dir(archive_dir, dataset, name)
    staged = out.with_name(out.name + ".part")
    sha, size = _link_or_copy(source, staged, chunk_mb=chunk_mb)
    try:
        check_official_file(dataset, name, staged)
    except DownloadError:
        staged.unlink(missing_ok=True)  # only the link; the user's file is left alone
        raise
    return _accept(
        dataset,
        name,
        staged,
        out,
        sha=sha,
        size=size,
        checksums=Path(checksums),
        # Where in archive_dir, not the user's absolute path (provenance stays portable).
        source="archive_dir/" + source.relative_to(archive_dir).as_posix(),
        rejected_dir=Path(rejected_dir) if rejected_dir else _default_rejected_dir(out.parent),
    )


def isic_download_command(
    query: str, outdir: str | Path, *, limit: int, isic: str | Path = "isic"
) -> list[str]:
    """The ``isic image download`` command line for ``query`` (``-s``), ``limit`` and ``outdir``."""
    return [str(isic), "image", "download", "--search", query, "--limit", str(limit), str(outdir)]


def _find_isic(isic: str | Path | None) -> str:
    """``isic`` as given, else on PATH, else next to this Python (a venv not on PATH)."""
    if isic is not None:
        return str(isic)
    found = shutil.which("isic") or shutil.which("isic", path=str(Path(sys.executable).parent))
    if found is None:
        raise FileNotFoundError(
            "the isic-cli executable `isic` is not on PATH; install it with `pip install isic-cli` "
            "(it is in envs/data.yaml)"
        )
    return found


def _melanoma_files(outdir: Path, *, limit: int) -> list[Path]:
    """Check what ``isic image download`` wrote: metadata.csv and one jpg per row."""
    metadata = outdir / "metadata.csv"
    if not metadata.is_file():
        raise DownloadError(f"isic image download wrote no {metadata}")
    with metadata.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if "isic_id" not in (reader.fieldnames or []):
            raise DownloadError(f"{metadata} has no isic_id column: {reader.fieldnames}")
        ids = [row["isic_id"] for row in reader]
    # The ids become file names: only ISIC ids, never a path (absolute, ../) or anything else.
    odd = [i for i in ids if not _ISIC_ID.fullmatch(i or "")]
    if odd:
        raise DownloadError(
            f"{metadata}: {len(odd)} isic_id value(s) are not ISIC ids, first {odd[0]!r}; "
            "expected ISIC_ followed by 7 digits"
        )
    missing = [i for i in ids if not (outdir / f"{i}.jpg").is_file()]
    if missing:
        raise DownloadError(
            f"{len(missing)} image(s) listed in {metadata} are missing from {outdir}: "
            + ", ".join(missing[:10])
            + (" ..." if len(missing) > 10 else "")
        )
    if len(ids) < limit:
        raise DownloadError(
            f"isic image download gave {len(ids)} image(s), {limit} were asked for; "
            "the query matches too few images or the download stopped early"
        )
    return [metadata] + [outdir / f"{i}.jpg" for i in ids]


def _melanoma_cache(cache_dir: Path, query: str, limit: int) -> Path:
    """The download cache of one (query, limit): ``<cache_dir>/isic_archive_melanoma/<key>``."""
    key = hashlib.sha256(f"{query}\n{limit}".encode()).hexdigest()[:12]
    return cache_dir / _MELANOMA_DATASET / key


def _cache_complete(cache: Path, limit: int) -> bool:
    """Whether an earlier isic-cli run left a complete set in ``cache`` (metadata and every jpg)."""
    try:
        _melanoma_files(cache, limit=limit)
    except DownloadError:
        return False
    return True


def _run_isic(query: str, limit: int, cache: Path, isic: str | Path | None) -> str:
    command = isic_download_command(query, cache, limit=limit, isic=_find_isic(isic))
    logger.info("running %s", subprocess.list2cmdline(command))
    result = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    for stream in (result.stdout, result.stderr):
        if stream.strip():
            logger.info("isic-cli: %s", stream.strip())
    if result.returncode:
        raise DownloadError(
            f"`{subprocess.list2cmdline(command)}` failed with exit code {result.returncode}: "
            f"{result.stderr.strip()[-500:]}"
        )
    return " ".join(command)


def _pinned_cache_complete(folder: Path, ids: Sequence[str]) -> bool:
    """Whether ``folder`` holds an isic-cli download of exactly ``ids`` (metadata and jpgs)."""
    try:
        files = _melanoma_files(folder, limit=len(ids))
    except DownloadError:
        return False
    return {p.stem for p in files[1:]} == set(ids)


def _merge_batches(batches: Sequence[Path], ids: Sequence[str], merged: Path) -> None:
    """One isic-cli folder from the batch downloads: metadata rows in pinned order (the union of
    the batches' columns, which depend on the fields their images carry), jpgs hard-linked,
    attributions joined and licence texts gathered."""
    rows: dict[str, dict[str, str]] = {}
    columns: list[str] = []
    attributions: list[str] = []
    merged.mkdir(parents=True, exist_ok=True)
    for batch in batches:
        with (batch / "metadata.csv").open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns += [c for c in reader.fieldnames or [] if c not in columns]
            rows.update({row["isic_id"]: row for row in reader})
        attribution = batch / "attribution.txt"
        if attribution.is_file():
            attributions += [
                a for a in attribution.read_text().split("\n\n") if a not in attributions
            ]
        for path in sorted(batch.glob("licenses/*")):
            (merged / "licenses").mkdir(exist_ok=True)
            _hardlink_or_copy(path, merged / "licenses" / path.name)
        for path in batch.glob("ISIC_*.jpg"):
            _hardlink_or_copy(path, merged / path.name)
    with (merged / "metadata.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, columns, restval="")
        writer.writeheader()
        writer.writerows(rows[i] for i in ids if i in rows)
    (merged / "attribution.txt").write_text("\n\n".join(attributions), encoding="utf-8")


def _fetch_pinned(
    ids: Sequence[str], cache_root: Path, isic: str | Path | None
) -> tuple[Path, str]:
    """Download exactly ``ids`` (batched ``isic_id:`` searches), reusing complete batches."""
    key = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12]
    root = cache_root / _MELANOMA_DATASET / f"pinned-{key}"
    merged = root / "merged"
    if _pinned_cache_complete(merged, ids):
        logger.info("reusing the complete download cache %s (isic-cli not run)", merged)
        return merged, f"cache {merged}"
    batches, commands = [], []
    for number, (batch, query) in enumerate(id_queries(ids)):
        folder = root / f"batch-{number:03d}"
        if not _pinned_cache_complete(folder, batch):
            folder.mkdir(parents=True, exist_ok=True)
            commands.append(_run_isic(query, len(batch), folder, isic))
            # The search matches ids, so it can only return fewer or others on an archive error.
            found = [p.stem for p in _melanoma_files(folder, limit=0)[1:]]
            check_pinned_ids(found, batch, where=f"isic-cli's download of batch {number}")
        batches.append(folder)
    shutil.rmtree(merged, ignore_errors=True)
    _merge_batches(batches, ids, merged)
    return merged, f"{len(batches)} pinned isic_id searches ({len(commands)} run now)"


def _hardlink_or_copy(source: Path, target: Path) -> None:
    """Place ``source`` at ``target``: a hard link (no second copy on disk), else a copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _accept_melanoma(
    path: Path,
    folder: str,
    *,
    linked: bool,
    checksums: Path,
    source: str,
    rejected: Path,
    chunk_mb: float,
) -> ArchiveStatus:
    """Check one isic-cli file (content, then lock); a bad downloaded file moves to ``rejected``.

    A linked file is the user's: it is checked in place and never moved (on a mismatch only a
    symlink to it is kept aside).
    """
    name = f"{folder}/{path.name}"
    sha, size = sha256_file(path, chunk_mb=chunk_mb)
    try:
        check_official_file(_MELANOMA_DATASET, name, path)
    except DownloadError:
        if not linked:
            _move(path, _rejected_path(rejected, _MELANOMA_DATASET, name, sha))
        raise
    candidate = path
    if linked:
        candidate = rejected / _MELANOMA_DATASET / folder / f"{path.name}.link"
        candidate.parent.mkdir(parents=True, exist_ok=True)
        candidate.unlink(missing_ok=True)
        candidate.symlink_to(path.resolve())
    try:
        return _accept(
            _MELANOMA_DATASET,
            name,
            candidate,
            candidate,
            sha=sha,
            size=size,
            checksums=checksums,
            source=source,
            rejected_dir=rejected,
        )
    finally:
        if linked:
            candidate.unlink(missing_ok=True)


def download_archive_melanomas(
    outdir: str | Path,
    *,
    query: str,
    limit: int,
    checksums: str | Path,
    archive_dir: str | Path | None = None,
    isic: str | Path | None = None,
    chunk_mb: float = 8,
    cache_dir: str | Path | None = None,
    rejected_dir: str | Path | None = None,
    pinned_ids: Sequence[str] | None = None,
) -> list[ArchiveStatus]:
    """Fetch the extra archive melanomas with isic-cli into ``outdir`` and check them.

    With ``pinned_ids`` (the list of :mod:`melrepro.data.pinned_ids`) exactly those images are
    fetched, by ``isic_id:A OR isic_id:B ...`` searches of at most 50 ids each, and a download or
    linked folder holding any other set is refused (naming the missing and extra ids); ``query``
    and ``limit`` then only describe how the list was made. Without it, as below:

    Runs ``isic image download --search QUERY --limit LIMIT CACHE`` into a download cache
    *outside* the rule's output (``cache_dir``, default ``resources/download_cache``; one folder
    per query and limit), then checks that ``metadata.csv`` is there with at least ``limit`` rows
    and that each ``<isic_id>.jpg`` it lists exists, and checks every one of these files against
    the lock (as ``images/<file>``). Files that pass are hard-linked (or copied) into ``outdir``;
    a file that fails is moved to ``rejected_dir`` (default ``resources/rejected``). Snakemake
    deletes ``outdir`` when the job fails, but the cache and the rejected files stay: a retry
    whose cache is complete does not run isic-cli again. When ``archive_dir`` holds
    ``isic_archive_melanoma/images/`` (or ``isic_archive_melanoma/`` with a ``metadata.csv``),
    those files are checked and symlinked instead.

    Returns
    -------
    list of ArchiveStatus
        One per file, ``metadata.csv`` first.

    Raises
    ------
    DownloadError
        If isic-cli fails (its exit code is given; its output is in the log) or its output is
        incomplete.
    ChecksumMismatchError
        If a file differs from the lock (it is kept aside; all files are checked, the first
        mismatch is raised).
    """
    outdir = Path(outdir)
    dataset_dir = outdir.parent
    rejected = Path(rejected_dir) if rejected_dir else _default_rejected_dir(dataset_dir)
    cache_root = Path(cache_dir) if cache_dir else dataset_dir.parent.parent / "download_cache"
    folder = layout(_MELANOMA_DATASET).folder or "images"
    source, linked = "", False
    if archive_dir is not None:
        for candidate in (
            Path(archive_dir) / _MELANOMA_DATASET / folder,
            Path(archive_dir) / _MELANOMA_DATASET,
        ):
            if (candidate / "metadata.csv").is_file():
                source, linked = str(candidate), True
                break
    if linked:
        logger.info("linking the archive melanomas from %s", source)
        fetched = Path(source)
    elif pinned_ids is not None:
        fetched, source = _fetch_pinned(pinned_ids, cache_root, isic)
    else:
        fetched = _melanoma_cache(cache_root, query, limit)
        if _cache_complete(fetched, limit):
            logger.info("reusing the complete download cache %s (isic-cli not run)", fetched)
            source = f"cache {fetched}"
        else:
            fetched.mkdir(parents=True, exist_ok=True)
            source = _run_isic(query, limit, fetched, isic)
    # A pinned set is compared id by id below (naming what is missing), not just counted.
    files = _melanoma_files(fetched, limit=limit if pinned_ids is None else 0)
    if pinned_ids is not None:
        check_pinned_ids([p.stem for p in files[1:]], pinned_ids, where=str(fetched))
    statuses: list[ArchiveStatus] = []
    mismatches: list[ChecksumMismatchError | DownloadError] = []
    for path in files:
        try:
            statuses.append(
                _accept_melanoma(
                    path,
                    folder,
                    linked=linked,
                    checksums=Path(checksums),
                    source=source,
                    rejected=rejected,
                    chunk_mb=chunk_mb,
                )
            )
        except (ChecksumMismatchError, DownloadError) as error:
            logger.error("%s", error)  # every file is checked before the first error is raised
            mismatches.append(error)
    if mismatches:
        raise mismatches[0]
    outdir.mkdir(parents=True, exist_ok=True)
    for path in files:
        if linked:
            (outdir / path.name).unlink(missing_ok=True)
            (outdir / path.name).symlink_to(path.resolve())
        else:
            _hardlink_or_copy(path, outdir / path.name)
    if not linked:  # isic-cli's attribution and licence texts travel with the images
        for extra in sorted(fetched.iterdir()):
            if extra.is_file() and not (outdir / extra.name).exists():
                _hardlink_or_copy(extra, outdir / extra.name)
    _log_summary(_MELANOMA_DATASET, statuses)
    return statuses


def _log_summary(dataset: str, statuses: Sequence[ArchiveStatus]) -> None:
    recorded = [s.file for s in statuses if s.status == "recorded"]
    logger.info(
        "%s: %d file(s) verified, %d newly recorded",
        dataset,
        len(statuses) - len(recorded),
        len(recorded),
    )
    if recorded:
        logger.warning(
            "%s: new checksum entries for %s; commit the lock file", dataset, ", ".join(recorded)
        )


def _dataset_files(dataset_dir: Path, paths: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """``(name in the lock, path)`` for each file.

    A folder (the archive melanomas) contributes its ``metadata.csv`` and ``*.jpg``, not the
    attribution and licence texts isic-cli writes next to them.
    """
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            children = sorted(
                p for p in path.iterdir() if p.name == "metadata.csv" or p.suffix == ".jpg"
            )
            files += [(p.relative_to(dataset_dir).as_posix(), p) for p in children]
        else:
            files.append((path.relative_to(dataset_dir).as_posix(), path))
    return files


def verify_archives(
    dataset: str,
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    checksums: str | Path,
    chunk_mb: float = 8,
    rejected_dir: str | Path | None = None,
) -> dict[str, object]:
    """Check every file of ``dataset`` against the lock and write ``verified.json`` to ``out``.

    ``paths`` are the dataset's files (and, for the archive melanomas, its ``images`` folder) under
    ``resources/archives/<dataset>/``. Missing entries are recorded and reported; every
    mismatching file is kept aside and the first one raised, so ``out`` is written only when all
    files are good. Lock entries for files that are not there are an error too (the isic-cli
    query returned other images than the ones recorded).

    Returns
    -------
    dict
        What ``verified.json`` holds: ``dataset``, ``checksums``, ``files`` (one
        :class:`ArchiveStatus` dict each), ``recorded`` (names newly added to the lock).

    Raises
    ------
    ChecksumMismatchError
        If any file differs from the lock (all are checked and logged first).
    FileNotFoundError
        If a file is missing, or the lock lists files of the dataset that are not there.
    """
    out = Path(out)
    dataset_dir = out.parent
    checksums = Path(checksums)
    rejected = Path(rejected_dir) if rejected_dir else _default_rejected_dir(dataset_dir)
    statuses: list[ArchiveStatus] = []
    mismatches: list[ChecksumMismatchError | DownloadError] = []
    for name, path in _dataset_files(dataset_dir, paths):
        if not path.is_file():
            raise FileNotFoundError(f"{dataset}: {path} is missing")
        sha, size = sha256_file(path, chunk_mb=chunk_mb)
        try:
            try:
                check_official_file(dataset, name, path)
            except DownloadError:
                _move(path, _rejected_path(rejected, dataset, name, sha))  # a link moves as such
                raise
            statuses.append(
                _accept(
                    dataset,
                    name,
                    path,
                    path,
                    sha=sha,
                    size=size,
                    checksums=checksums,
                    source="",
                    rejected_dir=rejected,
                )
            )
        except (ChecksumMismatchError, DownloadError) as error:
            logger.error("%s", error)  # all files are checked before the first error is raised
            mismatches.append(error)
    if mismatches:
        raise mismatches[0]
    names = {s.file for s in statuses} | {n for n, _ in _dataset_files(dataset_dir, paths)}
    extra = sorted(f for d, f in read_checksums(checksums) if d == dataset and f not in names)
    if extra:
        raise FileNotFoundError(
            f"{checksums} lists {len(extra)} file(s) of {dataset} that are not in {dataset_dir}: "
            + ", ".join(extra[:10])
        )
    _log_summary(dataset, statuses)
    report = {
        "dataset": dataset,
        "checksums": portable_path(checksums),
        # What ArchiveFolder checks every file against before each read (size, mtime, ends).
        "files": [
            s.to_dict() | file_fingerprint(s.path) | {"path": portable_path(s.path)}
            for s in statuses
        ],
        "recorded": [s.file for s in statuses if s.status == "recorded"],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
