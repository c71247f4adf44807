"""The workflow's own rule graph as a figure (replaces the papers' pipeline drawings)."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import networkx as nx

from melrepro.report.figures import new_figure, save_figure

__all__ = ["draw_rulegraph", "parse_rulegraph", "rulegraph_dot"]

logger = logging.getLogger(__name__)

_NODE = re.compile(r'^\s*(\d+)\s*\[\s*label\s*=\s*"([^"]+)"')
_EDGE = re.compile(r"^\s*(\d+)\s*->\s*(\d+)")


def parse_rulegraph(dot: str) -> nx.DiGraph:
    """The graph of ``snakemake --rulegraph`` output: nodes are rule names, edges input -> consumer."""
    names: dict[str, str] = {}
    graph = nx.DiGraph()
    for line in dot.splitlines():
        if match := _NODE.match(line):
            names[match.group(1)] = match.group(2)
            graph.add_node(match.group(2))
        elif match := _EDGE.match(line):
            graph.add_edge(names[match.group(1)], names[match.group(2)])
    return graph


def rulegraph_dot(snakefile: str | Path, targets: list[str], configfiles: list[str]) -> str:
    """Run ``snakemake --rulegraph`` for ``targets`` (no lock, nothing executed) and return the dot text."""
    command = [
        sys.executable,
        "-m",
        "snakemake",
        *targets,
        "--snakefile",
        str(snakefile),
        "--rulegraph",
        "--nolock",
    ]
    if configfiles:
        command += ["--configfile", *map(str, configfiles)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"snakemake --rulegraph failed:\n{result.stderr[-2000:]}")
    return result.stdout


def draw_rulegraph(graph: nx.DiGraph, png_path: str | Path, *, title: str) -> Path:
    """Draw the rule graph left to right, one column per dependency level."""
    graph = graph.copy()
    graph.remove_nodes_from([n for n in list(graph) if n == "all"])
    for level, nodes in enumerate(nx.topological_generations(graph)):
        for node in nodes:
            graph.nodes[node]["level"] = level
    positions = nx.multipartite_layout(graph, subset_key="level", align="vertical")
    levels = 1 + max((d["level"] for _, d in graph.nodes(data=True)), default=0)
    height = max(len(nodes) for nodes in nx.topological_generations(graph)) if len(graph) else 1
    fig, ax = new_figure(figsize=(max(6, 2.6 * levels), max(3, 0.7 * height)))
    nx.draw_networkx_edges(
        graph, positions, ax=ax, arrows=True, arrowsize=10, edge_color="#888888", node_size=2500
    )
    for node, (x, y) in positions.items():
        ax.text(
            x,
            y,
            node,
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "round", "facecolor": "#e8f0fa", "edgecolor": "#4a78b0"},
        )
    ax.set_title(title)
    ax.axis("off")
    return save_figure(fig, png_path)
