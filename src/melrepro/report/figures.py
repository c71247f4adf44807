"""Saving figures: a PNG for the report and a PDF for print, written atomically."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = ["new_figure", "save_figure"]

logger = logging.getLogger(__name__)


def new_figure(*args: Any, **kwargs: Any):
    """``plt.subplots`` on the non-interactive Agg backend (imported lazily: plotting is optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kwargs.setdefault("layout", "constrained")
    return plt.subplots(*args, **kwargs)


def save_figure(fig: Any, png_path: str | Path, *, dpi: int = 150) -> Path:
    """Save ``fig`` as ``png_path`` and the same figure as PDF beside it, then close it."""
    import matplotlib.pyplot as plt

    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    pdf_path = png_path.with_suffix(".pdf")
    tmp_png = png_path.with_name(png_path.stem + ".tmp.png")
    tmp_pdf = pdf_path.with_name(pdf_path.stem + ".tmp.pdf")
    fig.savefig(tmp_png, dpi=dpi)
    fig.savefig(tmp_pdf)
    plt.close(fig)
    tmp_pdf.replace(pdf_path)
    tmp_png.replace(png_path)
    logger.info("wrote %s", png_path)
    return png_path
