"""The pinned ``isic_id`` list of the extra archive melanomas (sp_graphs, paper 001 section 4.1).

The paper adds "300 melanoma images from the ISIC archive" without naming them or a selection
rule. A search (``data.archive_melanomas.query``) returns whatever the archive lists first on the
day it runs, so the images are pinned in a committed text file
(``data.archive_melanomas.ids``, by default ``config/isic_archive_melanoma_ids.txt``): ``#``
header lines with the provenance (date, query, limit, isic-cli version, command), then one ISIC id
a line. The download fetches exactly those ids (:func:`id_queries`, batched ``isic_id:... OR``
searches) and ingest refuses a set that differs (:func:`check_pinned_ids`, naming the missing and
extra ids). The search stays the way to refresh the list::

    python -m melrepro.data.refresh_archive_melanoma_ids --out config/isic_archive_melanoma_ids.txt

An empty list stops a real run (:func:`require_pinned_ids`) unless
``data.archive_melanomas.accept_unpinned`` is set: then the archive's current first ``limit``
matches are taken, and their files (hence ids) are recorded in the checksum lock.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "DEFAULT_IDS_FILE",
    "REFRESH_COMMAND",
    "PinnedIdsError",
    "check_pinned_ids",
    "id_queries",
    "pinned_ids_for_run",
    "pinned_ids_text",
    "read_pinned_ids",
    "refresh_archive_melanoma_ids",
    "require_pinned_ids",
]

#: Where config/isic.yaml (and the schema's default) points ``data.archive_melanomas.ids``.
DEFAULT_IDS_FILE = "config/isic_archive_melanoma_ids.txt"
REFRESH_COMMAND = f"python -m melrepro.data.refresh_archive_melanoma_ids --out {DEFAULT_IDS_FILE}"
#: ids per ``isic_id:A OR isic_id:B ...`` search: isic-cli sends the query in a GET request's URL
#: (about 25 characters an id), so a long list goes in several searches.
BATCH_SIZE = 50
_ISIC_ID = re.compile(r"ISIC_\d{7}")


class PinnedIdsError(ValueError):
    """The pinned id list is malformed, empty, or differs from the images at hand."""


def read_pinned_ids(path: str | Path) -> list[str]:
    """The ids of the pinned list at ``path`` in file order (``#`` lines and blanks skipped).

    Raises
    ------
    PinnedIdsError
        If a line is not an ISIC id (``ISIC_`` and 7 digits) or an id is listed twice (the line
        is named).
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = Path(path)
    ids: list[str] = []
    seen: set[str] = set()
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not _ISIC_ID.fullmatch(line):
            raise PinnedIdsError(f"{path}, line {number}: {line!r} is not an ISIC id")
        if line in seen:
            raise PinnedIdsError(f"{path}, line {number}: {line} is listed twice")
        seen.add(line)
        ids.append(line)
    return ids


def require_pinned_ids(ids: Sequence[str], *, limit: int, accept_unpinned: bool, path: str) -> bool:
    """Whether the run uses the pinned list (``True``) or the archive's current first matches.

    Raises
    ------
    PinnedIdsError
        If the list is empty and ``accept_unpinned`` is false (the message says how to fill it or
        accept the unpinned set), or it holds another number of ids than ``limit``.
    """
    if not ids:
        if accept_unpinned:
            return False
        raise PinnedIdsError(
            f"{path} pins no archive melanoma ids, so the {limit} images of sp_graphs are not "
            f"fixed. Fill it with `{REFRESH_COMMAND}` (runs the search of "
            "data.archive_melanomas.query with isic-cli and writes the ids with their provenance; "
            "commit the file), or set data.archive_melanomas.accept_unpinned: true to take the "
            "archive's current first matches (their files are then recorded in the checksum lock)"
        )
    if len(ids) != limit:
        raise PinnedIdsError(
            f"{path} pins {len(ids)} id(s), data.archive_melanomas.limit is {limit}; refresh the "
            "list or change the limit"
        )
    return True


def pinned_ids_for_run(path: str | Path, *, limit: int, accept_unpinned: bool) -> list[str] | None:
    """The pinned ids a real run must fetch and ingest, or ``None`` for the accepted unpinned
    search (:func:`read_pinned_ids` then :func:`require_pinned_ids`)."""
    ids = read_pinned_ids(path)
    if require_pinned_ids(ids, limit=limit, accept_unpinned=accept_unpinned, path=str(path)):
        return ids
    return None


def _listed(ids: Sequence[str]) -> str:
    return ", ".join(ids[:20]) + (f" ... ({len(ids)} in all)" if len(ids) > 20 else "")


def check_pinned_ids(found: Iterable[str], pinned: Sequence[str], *, where: str) -> None:
    """Raise :class:`PinnedIdsError` unless ``found`` is exactly the set ``pinned``.

    The message names the pinned ids missing from ``where`` and the ids there that are not pinned.
    """
    found_set, pinned_set = set(found), set(pinned)
    missing = [i for i in pinned if i not in found_set]
    extra = sorted(found_set - pinned_set)
    if not missing and not extra:
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} pinned id(s) missing: {_listed(missing)}")
    if extra:
        parts.append(f"{len(extra)} id(s) not in the pinned list: {_listed(extra)}")
    raise PinnedIdsError(
        f"{where} differs from the pinned archive melanoma list: " + "; ".join(parts)
    )


def id_queries(ids: Sequence[str], batch_size: int = BATCH_SIZE) -> list[tuple[list[str], str]]:
    """``(batch, search)`` pairs, the search being ``isic_id:A OR isic_id:B ...`` for the batch."""
    batches = [list(ids[i : i + batch_size]) for i in range(0, len(ids), batch_size)]
    return [(batch, " OR ".join(f"isic_id:{i}" for i in batch)) for batch in batches]


def pinned_ids_text(
    ids: Sequence[str], *, query: str, limit: int, isic_version: str, date: str, command: str
) -> str:
    """The pinned list file: provenance header lines, then one id a line."""
    header = [
        "# Pinned isic_id list of the extra ISIC archive melanomas (sp_graphs, paper 001 4.1).",
        "# The download fetches exactly these ids; ingest refuses any other set.",
        f"# Refresh (runs the search again, rewrites this file): {REFRESH_COMMAND}",
        f"# date: {date}",
        f"# query: {query}",
        f"# limit: {limit}",
        f"# isic-cli: {isic_version}",
        f"# command: {command}",
        f"# ids: {len(ids)}",
    ]
    return "\n".join(header + list(ids)) + "\n"


def _isic_version(isic: str) -> str:
    result = subprocess.run(
        [isic, "--version"], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or result.stderr.strip() or f"unknown (exit {result.returncode})"


def refresh_archive_melanoma_ids(
    out: str | Path,
    *,
    query: str,
    limit: int,
    isic: str | None = None,
    date: str | None = None,
) -> list[str]:
    """Run the search with ``isic metadata download`` and write its first ``limit`` ids to ``out``.

    The metadata download lists the images in the order ``isic image download`` fetches them, so
    the file pins what the unpinned search would have downloaded today.

    Raises
    ------
    RuntimeError
        If isic-cli fails (its exit code and the end of its error output are given) or returns
        fewer than ``limit`` ids.
    """
    isic = (
        isic or shutil.which("isic") or shutil.which("isic", path=str(Path(sys.executable).parent))
    )
    if isic is None:
        raise FileNotFoundError(
            "the isic-cli executable `isic` is not on PATH (pip install isic-cli)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "metadata.csv"
        command = [isic, "metadata", "download", "--search", query, "--limit", str(limit)]
        result = subprocess.run(
            [*command, "--outfile", str(csv_path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode:
            raise RuntimeError(
                f"`{subprocess.list2cmdline(command)}` failed with exit code "
                f"{result.returncode}: {result.stderr.strip()[-500:]}"
            )
        with csv_path.open(newline="", encoding="utf-8") as fh:
            ids = [row["isic_id"] for row in csv.DictReader(fh)][:limit]
    odd = [i for i in ids if not _ISIC_ID.fullmatch(i or "")]
    if odd or len(set(ids)) != len(ids):
        raise RuntimeError(f"isic-cli returned malformed or repeated ids: {odd[:5] or ids[:5]}")
    if len(ids) < limit:
        raise RuntimeError(f"the search returned {len(ids)} id(s), {limit} were asked for")
    date = date or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    shown = ["isic", *command[1:]]
    text = pinned_ids_text(
        ids,
        query=query,
        limit=limit,
        isic_version=_isic_version(isic),
        date=date,
        command=subprocess.list2cmdline(shown),
    )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text, encoding="utf-8")
    return ids
