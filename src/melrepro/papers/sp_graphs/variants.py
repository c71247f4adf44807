"""Names of the sp_graphs feature blocks and results tables: signals, tables, variant keys.

Feature variants are named ``<graph>-<weighting>-<signal>-tau<percent>-n<nodes>``, e.g.
``seg-learned-color-tau50-n60``; ``conventional`` holds the 394 image features.
"""

from __future__ import annotations

__all__ = ["SIGNALS", "SIGNAL_TITLE", "TABLES", "WEIGHTING_TITLE", "variant_key"]

SIGNALS = ("geometric", "texture", "color")
SIGNAL_TITLE = {"geometric": "Geometric", "texture": "Texture", "color": "Color"}
WEIGHTING_TITLE = {"gaussian": "Handcrafted", "learned": "Learned"}

#: Which graph, weighting and signal each results table holds (ARTIFACTS.md, sp_graphs).
TABLES: dict[str, tuple[str, str, str]] = {
    "table01": ("seg", "gaussian", "geometric"),
    "table02": ("seg", "gaussian", "texture"),
    "table03": ("seg", "gaussian", "color"),
    "table04": ("seg", "learned", "geometric"),
    "table05": ("seg", "learned", "texture"),
    "table06": ("seg", "learned", "color"),
    "table08": ("shg", "learned", "geometric"),
    "table09": ("shg", "learned", "texture"),
    "table10": ("shg", "learned", "color"),
    "table11": ("seg", "learned", "color"),  # fused, pruned at every tau
}


def variant_key(graph: str, weighting: str, signal: str, tau: float, n: int) -> str:
    """Name of one feature block, e.g. ``seg-learned-color-tau25-n40``."""
    return f"{graph}-{weighting}-{signal}-tau{round(100 * tau)}-n{n}"
