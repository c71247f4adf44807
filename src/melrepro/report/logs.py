"""Logging set-up for the thin rule scripts: one timestamped log file per job."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

__all__ = ["log_to_file"]


def log_to_file(path: str | Path, level: int = logging.INFO) -> None:
    """Send the root logger, warnings and stderr of this process to ``path``.

    Snakemake gives every job a ``log:`` file; tracebacks and tqdm bars written to
    stderr land there too, so a failed job's log tells the whole story.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = path.open("a", buffering=1, encoding="utf-8")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    sys.stderr = stream
