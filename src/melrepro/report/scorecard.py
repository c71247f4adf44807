"""The scorecard: every number a paper reports for its own method, next to the reproduced value.

Each number gets a *quantity* (``count``: dataset sizes; ``setting``: a hyper-parameter the paper
states; ``metric``: a result), the *protocol* it was computed under, and a *verdict*:

- metric: ``agrees`` when the reproduced value rounds to the paper's value (within half a unit
  of the paper's last printed digit) or the paper's value lies inside the reproduced value's
  95 % interval (table columns ``<column> CI low`` / ``<column> CI high``), else ``differs``;
- count: ``exact`` or ``differs`` on real data; ``synthetic`` on the twin (its sizes are not
  the archive's);
- setting: ``same`` or ``differs`` (a DEVIATION of the run);
- ``missing`` when the table has no such cell.

The quantity and protocol come from optional ``quantity``/``protocol`` columns of the paper's
CSV, else from the first matching rule of ``config/paper_values/quantities.csv`` (``paper,
artifact, row, column`` as regular expressions), else from the value: an integer of 2 or more
written without a decimal point is a count, anything else a metric.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from melrepro.data.archive_io import at_row, first_row
from melrepro.report.tables import ROW_SEPARATOR

__all__ = [
    "PAPER_VALUE_COLUMNS",
    "QUANTITIES",
    "classify",
    "lookup",
    "plot_scorecard",
    "read_paper_values",
    "read_quantity_rules",
    "score_paper",
    "summarize",
    "verdict",
]

logger = logging.getLogger(__name__)

PAPER_VALUE_COLUMNS = ("artifact", "row", "column", "value", "kind")
#: The kinds of number a scorecard distinguishes.
QUANTITIES = ("count", "setting", "metric")
QUANTITY_RULE_COLUMNS = ("paper", "artifact", "row", "column", "quantity", "protocol")
DEFAULT_PROTOCOL = "as the paper describes"


def read_paper_values(path: str | Path) -> pd.DataFrame:
    """Read ``config/paper_values/<paper>.csv`` and check its columns and ``kind`` values.

    Raises
    ------
    ValueError
        A missing column, or a ``kind`` other than ``own``/``cited`` (file and row named).
    """
    # Values as text: the number of printed digits sets the rounding tolerance.
    values = pd.read_csv(
        path, dtype={"artifact": str, "row": str, "column": str, "kind": str, "value": str}
    )
    missing = [c for c in PAPER_VALUE_COLUMNS if c not in values.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; expected {list(PAPER_VALUE_COLUMNS)}"
        )
    bad = ~values["kind"].isin(["own", "cited"])
    if bad.any():
        row = first_row(bad)
        raise ValueError(
            f"{at_row(str(path), row, 'kind')}: "
            f"{values['kind'].iloc[row]!r}; expected 'own' or 'cited'"
        )
    if "quantity" in values.columns:
        bad = values["quantity"].notna() & ~values["quantity"].isin(QUANTITIES)
        if bad.any():
            row = first_row(bad)
            raise ValueError(
                f"{at_row(str(path), row, 'quantity')}: "
                f"{values['quantity'].iloc[row]!r}; expected one of {list(QUANTITIES)} or blank"
            )
    return values


def read_quantity_rules(path: str | Path | None) -> pd.DataFrame:
    """Read ``config/paper_values/quantities.csv`` (rules; a missing file means no rules).

    Raises
    ------
    ValueError
        A missing column, an unknown quantity or a bad regular expression (file, row, column).
    """
    if path is None or not Path(path).exists():
        return pd.DataFrame(columns=list(QUANTITY_RULE_COLUMNS))
    rules = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in QUANTITY_RULE_COLUMNS if c not in rules.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; expected {list(QUANTITY_RULE_COLUMNS)}"
        )
    bad = ~rules["quantity"].isin(QUANTITIES)
    if bad.any():
        row = first_row(bad)
        raise ValueError(
            f"{at_row(str(path), row, 'quantity')}: {rules['quantity'].iloc[row]!r}; "
            f"expected one of {list(QUANTITIES)}"
        )
    for column in ("paper", "artifact", "row", "column"):
        for position, pattern in enumerate(rules[column]):
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(
                    f"{at_row(str(path), position, column)}: {pattern!r} is not a regular "
                    f"expression ({error})"
                ) from None
    return rules


def _inferred_quantity(value: str) -> str:
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return "metric"
    integer = re.fullmatch(r"[+-]?\d+", text) is not None
    return "count" if integer and abs(number) >= 2 else "metric"


def classify(values: pd.DataFrame, paper: str, rules: pd.DataFrame) -> pd.DataFrame:
    """Add ``quantity`` and ``protocol`` to paper values (explicit columns win over rules)."""
    out = values.copy()
    quantities, protocols = [], []
    for record in out.itertuples(index=False):
        quantity = getattr(record, "quantity", None)
        protocol = getattr(record, "protocol", None)
        if not isinstance(quantity, str) or not isinstance(protocol, str):
            for rule in rules.itertuples(index=False):
                if all(
                    re.fullmatch(getattr(rule, c) or ".*", str(v))
                    for c, v in (
                        ("paper", paper),
                        ("artifact", record.artifact),
                        ("row", record.row),
                        ("column", record.column),
                    )
                ):
                    quantity = quantity if isinstance(quantity, str) else rule.quantity
                    if not isinstance(protocol, str) and rule.protocol:
                        protocol = rule.protocol
                    break
        quantities.append(
            quantity if isinstance(quantity, str) else _inferred_quantity(record.value)
        )
        protocols.append(protocol if isinstance(protocol, str) else DEFAULT_PROTOCOL)
    out["quantity"] = quantities
    out["protocol"] = protocols
    return out


def _tolerance(text: str) -> float:
    """Half a unit of the last printed digit of ``text`` (``0.909`` -> 0.0005, ``374`` -> 0.5)."""
    text = str(text).strip().lower()
    mantissa = text.split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    exponent = int(text.split("e")[1]) if "e" in text else 0
    return 0.5 * 10.0 ** (exponent - decimals)


def verdict(
    quantity: str,
    paper: float,
    reproduced: float | None,
    *,
    tolerance: float,
    interval: tuple[float, float] | None = None,
    real_data: bool = False,
) -> str:
    """The verdict of one number (see the module docstring)."""
    if reproduced is None or (isinstance(reproduced, float) and math.isnan(reproduced)):
        return "missing"
    close = abs(reproduced - paper) <= tolerance * (1 + 1e-9)
    if quantity == "count":
        if not real_data:
            return "synthetic"
        return "exact" if reproduced == paper else "differs"
    if quantity == "setting":
        return "same" if close else "differs"
    if close:
        return "agrees"
    if interval is not None and all(np.isfinite(interval)) and interval[0] <= paper <= interval[1]:
        return "agrees"
    return "differs"


def lookup(table: pd.DataFrame, row: str, column: str) -> float | None:
    """The value at (``row``, ``column``) of a table CSV read without index.

    ``row`` is matched against the first column, then the first two joined by
    :data:`~melrepro.report.tables.ROW_SEPARATOR`, and so on (tables write their index levels first).
    """
    if column not in table.columns:
        return None
    for depth in range(1, table.shape[1]):
        keys = table.iloc[:, :depth].astype(str).agg(ROW_SEPARATOR.join, axis=1)
        hits = table.loc[keys == row, column]
        if len(hits) == 1:
            value = pd.to_numeric(hits.iloc[0], errors="coerce")
            return None if pd.isna(value) else float(value)
    return None


def score_paper(
    paper_values_path: str | Path,
    tables_dir: str | Path,
    *,
    data_source: str,
    quantities_path: str | Path | None = None,
    paper: str | None = None,
) -> pd.DataFrame:
    """Paper value, reproduced value, difference and verdict for every ``own`` paper value.

    Parameters
    ----------
    paper_values_path : path
        ``config/paper_values/<paper>.csv``.
    tables_dir : path
        ``results/<paper>/tables``.
    data_source : str
        ``synthetic`` or ``isic`` (counts are only judged on real data).
    quantities_path : path, optional
        ``config/paper_values/quantities.csv`` (see :func:`classify`).
    paper : str, optional
        Paper key matched by the rules (default: the CSV's file stem).
    """
    values = read_paper_values(paper_values_path)
    own = values[values["kind"] == "own"]
    paper = paper or Path(paper_values_path).stem
    own = classify(own, paper, read_quantity_rules(quantities_path))
    rows = []
    cache: dict[str, pd.DataFrame | None] = {}
    for record in own.itertuples(index=False):
        if record.artifact not in cache:
            path = Path(tables_dir) / f"{record.artifact}.csv"
            cache[record.artifact] = pd.read_csv(path) if path.exists() else None
        table = cache[record.artifact]
        reproduced = None if table is None else lookup(table, record.row, record.column)
        low = high = None
        if table is not None:
            low = lookup(table, record.row, f"{record.column} CI low")
            high = lookup(table, record.row, f"{record.column} CI high")
        if reproduced is None:
            logger.warning(
                "no reproduced value for %s / %s / %s", record.artifact, record.row, record.column
            )
        value = float(record.value)
        tolerance = _tolerance(record.value)
        interval = (low, high) if low is not None and high is not None else None
        rows.append(
            {
                "artifact": record.artifact,
                "row": record.row,
                "column": record.column,
                "paper_value": value,
                "reproduced_value": reproduced,
                "difference": None if reproduced is None else reproduced - value,
                "data_source": data_source,
                "quantity": record.quantity,
                "protocol": record.protocol,
                "ci_low": low,
                "ci_high": high,
                "tolerance": tolerance,
                "verdict": verdict(
                    record.quantity,
                    value,
                    reproduced,
                    tolerance=tolerance,
                    interval=interval,
                    real_data=data_source != "synthetic",
                ),
            }
        )
    return pd.DataFrame(rows, columns=list(SCORECARD_COLUMNS))


SCORECARD_COLUMNS = (
    "artifact",
    "row",
    "column",
    "paper_value",
    "reproduced_value",
    "difference",
    "data_source",
    "quantity",
    "protocol",
    "ci_low",
    "ci_high",
    "tolerance",
    "verdict",
)


def summarize(scorecards: dict[str, pd.DataFrame]) -> str:
    """Markdown summary per paper and quantity: numbers, reproduced, verdicts, differences.

    Counts, settings and metrics are summarised apart: a median over all three mixes dataset
    sizes (hundreds) with AUCs (below 1).
    """
    lines = [
        "# Scorecard",
        "",
        "| paper | quantity | numbers reported | reproduced | agree | differ | "
        "median abs. difference | median relative difference | protocols | data |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for paper, card in scorecards.items():
        card = card.copy()
        if "quantity" not in card.columns:  # a scorecard written before quantities existed
            card["quantity"] = "metric"
            card["verdict"] = np.where(card["reproduced_value"].notna(), "unjudged", "missing")
            card["protocol"] = DEFAULT_PROTOCOL
        source = ", ".join(sorted(set(card["data_source"].astype(str)))) or "-"
        for quantity in QUANTITIES:
            part = card[card["quantity"] == quantity]
            if part.empty:
                continue
            found = part["reproduced_value"].notna()
            difference = part.loc[found, "difference"].abs()
            relative = difference / part.loc[found, "paper_value"].abs().where(lambda v: v > 0)
            median = difference.median() if found.any() else float("nan")
            median_relative = relative.median() if relative.notna().any() else float("nan")
            agree = part["verdict"].isin(["agrees", "exact", "same"]).sum()
            differ = (part["verdict"] == "differs").sum()
            protocols = "; ".join(sorted(set(part["protocol"].astype(str))))
            lines.append(
                f"| {paper} | {quantity} | {len(part)} | {int(found.sum())} | {agree} | "
                f"{differ} | {median:.4g} | {median_relative:.1%} | {protocols} | {source} |"
            )
    lines += [
        "",
        "Verdicts: a metric agrees when the reproduced value rounds to the paper's (half a unit of",
        "its last printed digit) or the paper's value lies in the reproduced 95 % interval; a count",
        "must be exact and is only judged on real data; a setting differs where the run deviates.",
        "",
        "Differences on `synthetic` data only show that the pipeline runs end to end; they say",
        "nothing about the papers' claims. Run with `--configfile config/isic.yaml` for real numbers.",
        "",
    ]
    return "\n".join(lines)


#: Colour of each quantity in the scorecard figures.
QUANTITY_COLOURS = {"count": "tab:blue", "setting": "tab:orange", "metric": "tab:green"}


def plot_scorecard(card: pd.DataFrame, output: str | Path, *, paper: str) -> None:
    """Paper value against reproduced value, one panel per quantity, identity line, 95 % intervals.

    Panels keep counts, settings and metrics on their own scales (a count of 1372 next to an
    AUC of 0.9 would flatten every metric onto one point).
    """
    from melrepro.report.figures import new_figure, save_figure

    found = card[card["reproduced_value"].notna()]
    kinds = [q for q in QUANTITIES if (card["quantity"] == q).any()] or ["metric"]
    fig, axes = new_figure(1, len(kinds), figsize=(4.2 * len(kinds), 4.2), squeeze=False)
    for ax, quantity in zip(axes[0], kinds, strict=True):
        part = found[found["quantity"] == quantity]
        n_total = int((card["quantity"] == quantity).sum())
        colour = QUANTITY_COLOURS[quantity]
        if len(part):
            x, y = part["paper_value"].to_numpy(float), part["reproduced_value"].to_numpy(float)
            low = (
                part["ci_low"].astype(float).to_numpy()
                if "ci_low" in part
                else np.full_like(y, np.nan)
            )
            high = (
                part["ci_high"].astype(float).to_numpy()
                if "ci_high" in part
                else np.full_like(y, np.nan)
            )
            has = np.isfinite(low) & np.isfinite(high)
            if has.any():
                ax.errorbar(
                    x[has],
                    y[has],
                    yerr=[y[has] - low[has], high[has] - y[has]],
                    fmt="none",
                    ecolor=colour,
                    alpha=0.35,
                    lw=1,
                )
            agree = part["verdict"].isin(["agrees", "exact", "same"]).to_numpy()
            ax.scatter(x[~agree], y[~agree], s=16, color=colour, label=f"{quantity}")
            ax.scatter(
                x[agree],
                y[agree],
                s=30,
                facecolors="none",
                edgecolors="k",
                label=f"{quantity}, agrees",
            )
            lo = float(np.nanmin(np.concatenate([x, y, low[has]])))
            hi = float(np.nanmax(np.concatenate([x, y, high[has]])))
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", ls="--", lw=1)
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
            ax.legend(fontsize=7, loc="upper left")
        else:
            ax.text(
                0.5, 0.5, "nothing reproduced", ha="center", va="center", transform=ax.transAxes
            )
        ax.set_xlabel("paper")
        ax.set_ylabel("reproduced")
        ax.set_title(f"{quantity}: {len(part)} of {n_total} reproduced", fontsize=9)
    source = ", ".join(sorted(set(card["data_source"].astype(str)))) or "-"
    fig.suptitle(f"{paper}: paper vs reproduced ({source} data; dashed: identity)", fontsize=10)
    save_figure(fig, output)
