"""The scorecard: every number a paper reports for its own method, next to the reproduced value.

Each number gets a *quantity* (``count``: dataset sizes and statistics; ``setting``: a
hyper-parameter the paper states; ``metric``: a result), the *protocol* that produced the
reproduced value, and a *verdict* (:func:`verdict`, the one place verdicts are decided):

- metric, on real data: ``agrees`` when the reproduced 95 % interval (table columns
  ``<column> CI low`` / ``<column> CI high``) lies within the paper's value +- its precision +-
  the margin of the metric's family (``config/paper_values/margins.csv``), ``differs`` when the
  interval excludes the paper's value +- precision, ``inconclusive`` when the interval is wider
  than the margin, or there is no interval or no margin;
- count, on real data: ``agrees`` within the paper's precision (an integer: exactly), else
  ``differs``;
- setting: ``agrees`` or ``differs`` (a DEVIATION of the run), on any data;
- ``not judged``: counts and metrics on synthetic data (the twin says nothing about a paper),
  metrics on rehearsal data (the official rows with drawn images: its counts are judged);
- ``by construction``: values the method fixes whatever the data (``by_construction`` column of
  the paper's CSV), never counted as agreement;
- ``missing`` when the table has no such cell.

Where a table aggregates trainings over seeds (a ``Seeds`` column above 1,
:mod:`melrepro.report.seeds`), its interval columns are the Student-t 95 % interval of the mean
over the seeds, and the row's reason says so.

A paper value's precision is half a unit of its last printed digit, or the ``precision`` column
of the paper's CSV where the paper states an approximate value ("around 55 %").

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
from melrepro.report.seeds import SEEDS_COLUMN
from melrepro.report.tables import ROW_SEPARATOR

__all__ = [
    "PAPER_VALUE_COLUMNS",
    "QUANTITIES",
    "VERDICTS",
    "classify",
    "lookup",
    "plot_scorecard",
    "margin_of",
    "read_margin_rules",
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
MARGIN_RULE_COLUMNS = ("paper", "artifact", "row", "column", "family", "margin")
#: Every verdict a number can get (:func:`verdict`), in the summary's order.
VERDICTS = ("agrees", "inconclusive", "differs", "missing", "by construction", "not judged")
DEFAULT_PROTOCOL = "as the paper describes"
#: Data sources whose images are drawn: their metrics are never judged. The rehearsal's rows are
#: the official ones, so its counts are (``synthetic`` rows are drawn too: nothing is judged).
DRAWN_IMAGE_SOURCES = ("synthetic", "rehearsal")


def read_paper_values(path: str | Path) -> pd.DataFrame:
    """Read ``config/paper_values/<paper>.csv`` and check its columns and ``kind`` values.

    Optional columns: ``quantity`` and ``protocol`` (see :func:`classify`), ``precision`` (how
    far an approximate value is known: "around 55 %" is ``55`` with precision ``5``; blank:
    half a unit of the last printed digit) and ``by_construction`` (why the method fixes the
    value whatever the data; blank: it does not).

    Raises
    ------
    ValueError
        A missing column, a ``kind`` other than ``own``/``cited`` or a ``precision`` that is
        not a number > 0 (file and row named).
    """
    # Values as text: the number of printed digits sets the rounding tolerance.
    values = pd.read_csv(
        path,
        dtype={
            "artifact": str,
            "row": str,
            "column": str,
            "kind": str,
            "value": str,
            "by_construction": str,
        },
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
    if "precision" in values.columns:
        precision = pd.to_numeric(values["precision"], errors="coerce")
        bad = values["precision"].notna() & ~(precision > 0)
        if bad.any():
            row = first_row(bad)
            raise ValueError(
                f"{at_row(str(path), row, 'precision')}: "
                f"{values['precision'].iloc[row]!r}; expected a number > 0 or blank"
            )
    return values


def _check_patterns(rules: pd.DataFrame, path: str | Path) -> None:
    for column in ("paper", "artifact", "row", "column"):
        for position, pattern in enumerate(rules[column]):
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(
                    f"{at_row(str(path), position, column)}: {pattern!r} is not a regular "
                    f"expression ({error})"
                ) from None


def _read_rules(path: str | Path | None, columns: tuple[str, ...]) -> pd.DataFrame:
    if path is None or not Path(path).exists():
        return pd.DataFrame(columns=list(columns))
    rules = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in rules.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(columns)}")
    _check_patterns(rules, path)
    return rules


def _matches(rule: object, paper: str, artifact: str, row: str, column: str) -> bool:
    return all(
        re.fullmatch(getattr(rule, c) or ".*", str(v))
        for c, v in (("paper", paper), ("artifact", artifact), ("row", row), ("column", column))
    )


def read_quantity_rules(path: str | Path | None) -> pd.DataFrame:
    """Read ``config/paper_values/quantities.csv`` (rules; a missing file means no rules).

    Raises
    ------
    ValueError
        A missing column, an unknown quantity or a bad regular expression (file, row, column).
    """
    rules = _read_rules(path, QUANTITY_RULE_COLUMNS)
    bad = ~rules["quantity"].isin(QUANTITIES)
    if bad.any():
        row = first_row(bad)
        raise ValueError(
            f"{at_row(str(path), row, 'quantity')}: {rules['quantity'].iloc[row]!r}; "
            f"expected one of {list(QUANTITIES)}"
        )
    return rules


def read_margin_rules(path: str | Path | None) -> pd.DataFrame:
    """Read ``config/paper_values/margins.csv``: the metric family and margin of each metric.

    The first rule whose ``paper, artifact, row, column`` regular expressions all match gives a
    metric its ``family`` and ``margin`` (in the paper value's unit; blank: no margin, so the
    metric stays inconclusive). A missing file means no rules.

    Raises
    ------
    ValueError
        A missing column, a margin that is not a number >= 0, or a bad regular expression.
    """
    rules = _read_rules(path, MARGIN_RULE_COLUMNS)
    margins = pd.to_numeric(rules["margin"].replace("", np.nan), errors="coerce")
    bad = (rules["margin"] != "") & ~(margins >= 0)
    if bad.any():
        row = first_row(bad)
        raise ValueError(
            f"{at_row(str(path), row, 'margin')}: {rules['margin'].iloc[row]!r}; "
            "expected a number >= 0 or blank"
        )
    rules["margin"] = margins
    return rules


def margin_of(
    rules: pd.DataFrame, paper: str, artifact: str, row: str, column: str
) -> tuple[str | None, float | None]:
    """``(family, margin)`` of the first matching rule, ``(None, None)`` when none matches."""
    for rule in rules.itertuples(index=False):
        if _matches(rule, paper, artifact, row, column):
            return rule.family, None if pd.isna(rule.margin) else float(rule.margin)
    return None, None


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
                if _matches(rule, paper, record.artifact, record.row, record.column):
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


def _absent(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def verdict(
    quantity: str,
    paper: float,
    reproduced: float | None,
    *,
    precision: float,
    margin: float | None = None,
    interval: tuple[float | None, float | None] | None = None,
    real_data: bool = False,
    real_rows: bool | None = None,
    by_construction: str = "",
) -> tuple[str, str]:
    """``(verdict, reason)`` of one number; the only place verdicts are decided.

    ``precision`` is how far the paper's own value is known (half a unit of its last printed
    digit, or the precision an approximate value states: "around 55 %" is 55 +- 5). A metric is
    judged by its 95 % ``interval`` against the paper's band ``paper +- precision`` widened by
    the ``margin`` of its metric family: ``agrees`` when the whole interval lies inside the
    widened band, ``differs`` when it misses the paper's band, ``inconclusive`` in between (an
    interval too wide to tell) and without an interval or a margin. Counts (only on real data)
    and settings agree when the reproduced value lies in the paper's band. Values the method
    fixes whatever the data (``by_construction``: the reason) are never judged. ``real_rows``
    (default: ``real_data``) judges counts alone: the rehearsal's official rows with drawn images.
    """
    if _absent(reproduced):
        return "missing", "the reproduced table has no such cell"
    if by_construction:
        return "by construction", by_construction
    slack = 1e-9 * max(1.0, abs(paper))  # float noise of values written to CSV and read back
    low, high = paper - precision - slack, paper + precision + slack
    if quantity == "setting":
        if low <= reproduced <= high:
            return "agrees", "the run uses the paper's setting"
        return "differs", "the run deviates from the paper's setting (see DEVIATION)"
    counts_judged = real_data if real_rows is None else real_rows
    if quantity == "count" and counts_judged:
        if low <= reproduced <= high:
            return "agrees", "within the paper's precision"
        return "differs", "outside the paper's precision"
    if not real_data:
        if counts_judged:
            return "not judged", "rehearsal data: real rows, drawn images; the metric says nothing"
        return "not judged", "synthetic data: the number shows the pipeline runs, not the paper"
    if _absent(margin):
        return "inconclusive", "no margin configured for this metric family"
    if interval is None or any(_absent(v) or not np.isfinite(v) for v in interval):
        return "inconclusive", "no interval (a single run, or a table without one)"
    ci_low, ci_high = sorted(interval)
    if ci_high < low or ci_low > high:
        return "differs", "the 95 % interval excludes the paper's value"
    if low - margin <= ci_low and ci_high <= high + margin:
        return "agrees", "the 95 % interval lies within the paper's value +- margin"
    return "inconclusive", "the 95 % interval is wider than the paper's value +- margin"


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
    margins_path: str | Path | None = None,
    paper: str | None = None,
) -> pd.DataFrame:
    """Paper value, reproduced value, interval, difference and verdict of every ``own`` value.

    Parameters
    ----------
    paper_values_path : path
        ``config/paper_values/<paper>.csv``.
    tables_dir : path
        ``results/<paper>/tables``; a table's ``<column> CI low`` / ``<column> CI high`` columns
        are the reproduced value's 95 % interval.
    data_source : str
        ``synthetic``, ``isic`` or ``rehearsal`` (counts are judged on the real rows of isic and
        rehearsal, metrics on isic only).
    quantities_path : path, optional
        ``config/paper_values/quantities.csv`` (see :func:`classify`).
    margins_path : path, optional
        ``config/paper_values/margins.csv`` (see :func:`read_margin_rules`).
    paper : str, optional
        Paper key matched by the rules (default: the CSV's file stem).
    """
    values = read_paper_values(paper_values_path)
    own = values[values["kind"] == "own"]
    paper = paper or Path(paper_values_path).stem
    own = classify(own, paper, read_quantity_rules(quantities_path))
    margins = read_margin_rules(margins_path)
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
        # rows aggregated over seeds (melrepro.report.seeds): the interval is over the seeds
        seeds = None if table is None else lookup(table, record.row, SEEDS_COLUMN)
        if reproduced is None:
            logger.warning(
                "no reproduced value for %s / %s / %s", record.artifact, record.row, record.column
            )
        value = float(record.value)
        stated = pd.to_numeric(getattr(record, "precision", None), errors="coerce")
        precision = float(stated) if pd.notna(stated) else _tolerance(record.value)
        constructed = getattr(record, "by_construction", None)
        constructed = constructed.strip() if isinstance(constructed, str) else ""
        family, margin = (None, None)
        if record.quantity == "metric":
            family, margin = margin_of(margins, paper, record.artifact, record.row, record.column)
        judged, reason = verdict(
            record.quantity,
            value,
            reproduced,
            precision=precision,
            margin=margin,
            interval=(low, high),
            real_data=data_source not in DRAWN_IMAGE_SOURCES,
            real_rows=data_source != "synthetic",
            by_construction=constructed,
        )
        if record.quantity == "metric" and seeds is not None and seeds > 1:
            reason += f"; interval: Student-t of the mean over {int(seeds)} seeds"
        rows.append(
            {
                "artifact": record.artifact,
                "row": record.row,
                "column": record.column,
                "paper_value": value,
                "precision": precision,
                "reproduced_value": reproduced,
                "difference": None if reproduced is None else reproduced - value,
                "data_source": data_source,
                "quantity": record.quantity,
                "protocol": record.protocol,
                "family": family,
                "margin": margin,
                "ci_low": low,
                "ci_high": high,
                "verdict": judged,
                "reason": reason,
            }
        )
    return pd.DataFrame(rows, columns=list(SCORECARD_COLUMNS))


SCORECARD_COLUMNS = (
    "artifact",
    "row",
    "column",
    "paper_value",
    "precision",
    "reproduced_value",
    "difference",
    "data_source",
    "quantity",
    "protocol",
    "family",
    "margin",
    "ci_low",
    "ci_high",
    "verdict",
    "reason",
)

#: Verdicts of scorecards written before :data:`VERDICTS` (``exact``, ``same``, ``synthetic``).
_OLD_VERDICTS = {"exact": "agrees", "same": "agrees", "synthetic": "not judged"}


def _summary_line(paper: str, quantity: str, part: pd.DataFrame, source: str) -> str:
    found = part["reproduced_value"].notna()
    difference = part.loc[found, "difference"].abs()
    relative = difference / part.loc[found, "paper_value"].abs().where(lambda v: v > 0)
    median = difference.median() if found.any() else float("nan")
    median_relative = relative.median() if relative.notna().any() else float("nan")
    counts = part["verdict"].value_counts()
    tally = " | ".join(str(int(counts.get(v, 0))) for v in VERDICTS)
    protocols = (
        "(by quantity, above)"
        if quantity == "all"
        else "; ".join(sorted(set(part["protocol"].astype(str))))
    )
    return (
        f"| {paper} | {quantity} | {len(part)} | {int(found.sum())} | {tally} | "
        f"{median:.4g} | {median_relative:.1%} | {protocols} | {source} |"
    )


def summarize(scorecards: dict[str, pd.DataFrame]) -> str:
    """Markdown summary per paper and quantity (and per paper): how many numbers get each verdict.

    Counts, settings and metrics are summarised apart: a median over all three mixes dataset
    sizes (hundreds) with AUCs (below 1).
    """
    lines = [
        "# Scorecard",
        "",
        "| paper | quantity | numbers reported | values found | agree | inconclusive | differ | "
        "missing | by construction | not judged | median abs. difference | "
        "median relative difference | protocols | data |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for paper, card in scorecards.items():
        card = card.copy()
        if "quantity" not in card.columns:  # a scorecard written before quantities existed
            card["quantity"] = "metric"
            card["verdict"] = np.where(card["reproduced_value"].notna(), "not judged", "missing")
            card["protocol"] = DEFAULT_PROTOCOL
        card["verdict"] = card["verdict"].replace(_OLD_VERDICTS)
        source = ", ".join(sorted(set(card["data_source"].astype(str)))) or "-"
        for quantity in QUANTITIES:
            part = card[card["quantity"] == quantity]
            if not part.empty:
                lines.append(_summary_line(paper, quantity, part, source))
        lines.append(_summary_line(paper, "all", card, source))
    lines += [
        "",
        "Verdicts. A metric is judged by its reproduced 95 % interval (bootstrap over test images,",
        "or over runs / CV folds where the paper averages them) against the paper's value +- its",
        "precision (half a unit of the last printed digit, or the precision an approximate value",
        "states) widened by the margin of the metric's family (`config/paper_values/margins.csv`):",
        "*agree* when the whole interval lies inside, *differ* when the interval misses the paper's",
        "value, *inconclusive* when the interval is wider than the margin or there is no interval.",
        "A count agrees when it lies within the paper's precision, and is only judged on real rows",
        "(`isic`, or the `rehearsal`: the official CSVs with drawn images, whose metrics are not judged);",
        "a setting differs where the run deviates. *By construction*: values the method fixes",
        "whatever the data, never counted as agreement. *Not judged*: counts and metrics computed",
        "on `synthetic` data, which only show that the pipeline runs end to end; run with",
        "`--configfile config/isic.yaml` for numbers that say something about the papers.",
        "*Values found* counts numbers the run's tables hold, whatever their verdict.",
        "",
    ]
    return "\n".join(lines)


#: Colour of each quantity in the scorecard figures.
QUANTITY_COLOURS = {"count": "tab:blue", "setting": "tab:orange", "metric": "tab:green"}
#: Marker of each verdict: filled agrees, hollow inconclusive, cross differs, grey not judged.
VERDICT_MARKERS = {
    "agrees": {"marker": "o", "s": 22, "edgecolors": "k", "linewidths": 0.5},
    "inconclusive": {"marker": "o", "s": 22, "facecolors": "none", "linewidths": 1},
    "differs": {"marker": "x", "s": 26},
    "by construction": {"marker": "s", "s": 14, "color": "0.6"},
    "not judged": {"marker": ".", "s": 20, "color": "0.4"},
}


def plot_scorecard(card: pd.DataFrame, output: str | Path, *, paper: str) -> None:
    """Paper value against reproduced value, one panel per quantity, identity line, 95 % intervals.

    Markers tell the verdict (:data:`VERDICT_MARKERS`).

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
            verdicts = part["verdict"].replace(_OLD_VERDICTS).to_numpy()
            for judged, style in VERDICT_MARKERS.items():
                chosen = verdicts == judged
                if chosen.any():
                    ax.scatter(
                        x[chosen],
                        y[chosen],
                        label=f"{judged} ({int(chosen.sum())})",
                        # a hollow marker takes the quantity's colour on its edge
                        **{"edgecolors" if "facecolors" in style else "color": colour, **style},
                    )
            lo = float(np.nanmin(np.concatenate([x, y, low[has]])))
            hi = float(np.nanmax(np.concatenate([x, y, high[has]])))
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", ls="--", lw=1)
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
            ax.legend(fontsize=7, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no value found", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("paper")
        ax.set_ylabel("reproduced")
        ax.set_title(f"{quantity}: {len(part)} of {n_total} with a value", fontsize=9)
    source = ", ".join(sorted(set(card["data_source"].astype(str)))) or "-"
    fig.suptitle(f"{paper}: paper vs reproduced\n({source} data; dashed: identity)", fontsize=10)
    save_figure(fig, output)
