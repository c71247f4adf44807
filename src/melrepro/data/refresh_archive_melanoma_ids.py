"""Refresh the pinned isic_id list of the archive melanomas from the search (issue 22.1)::

    python -m melrepro.data.refresh_archive_melanoma_ids --out config/isic_archive_melanoma_ids.txt

Reads ``data.archive_melanomas`` (query, limit) from ``--config`` (default ``config/isic.yaml``)
unless ``--query`` and ``--limit`` are given, runs ``isic metadata download`` and writes the list
with its provenance (:func:`melrepro.data.pinned_ids.refresh_archive_melanoma_ids`). A module of
its own, imported by no rule script: it needs PyYAML, which the rules' data environment lacks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from melrepro.data.pinned_ids import DEFAULT_IDS_FILE, refresh_archive_melanoma_ids

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m melrepro.data.refresh_archive_melanoma_ids --out FILE``.

    Runs the search of ``data.archive_melanomas`` (from ``--config``, or ``--query`` and
    ``--limit``) with isic-cli and writes the pinned id list with its provenance.
    """
    parser = argparse.ArgumentParser(
        prog="python -m melrepro.data.refresh_archive_melanoma_ids",
        description="Run the archive melanoma search and pin its first ids (with the date, "
        "query and isic-cli version).",
    )
    parser.add_argument("--out", default=DEFAULT_IDS_FILE, help="the pinned list to write")
    parser.add_argument(
        "--config", default="config/isic.yaml", help="read data.archive_melanomas from here"
    )
    parser.add_argument("--query", help="search (default: the config's)")
    parser.add_argument("--limit", type=int, help="number of ids (default: the config's)")
    parser.add_argument("--isic", help="the isic-cli executable (default: on PATH)")
    args = parser.parse_args(argv)
    settings: dict = {}
    if args.query is None or args.limit is None:
        loaded = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
        settings = (loaded.get("data") or {}).get("archive_melanomas") or {}
    query = args.query if args.query is not None else settings.get("query")
    limit = args.limit if args.limit is not None else settings.get("limit")
    if query is None or limit is None:
        parser.error(
            f"{args.config} sets no data.archive_melanomas query/limit; give --query/--limit"
        )
    ids = refresh_archive_melanoma_ids(args.out, query=query, limit=int(limit), isic=args.isic)
    sys.stdout.write(f"wrote {len(ids)} pinned ids to {args.out}; commit it\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
