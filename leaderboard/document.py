"""A small document model shared by the HTML and Markdown writers.

Numbers are formatted exactly once, here, so the HTML page and ``leaderboard.md`` show
the same text; each cell also keeps its raw value for sorting in the browser.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import pandas as pd

from snnbench.leaderboard.paper import PaperTable
from snnbench.leaderboard.tables import AblationTable, Column, TaskTable

_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


# -- blocks ----------------------------------------------------------------------------
@dataclass
class Cell:
    """A formatted table cell; ``sort`` is its raw value ("" sorts last)."""

    text: str
    sort: str = ""
    best: bool = False


@dataclass
class Table:
    """A table block; ``kind`` is measured | paper | ablation | failed (styles and labels)."""

    headers: list[str]
    rows: list[list[Cell]]
    kind: str
    numeric: list[bool]
    table_id: str
    caption: str = ""
    row_classes: list[str] = field(default_factory=list)
    sortable: bool = True


@dataclass
class Paragraph:
    text: str
    css: str = ""     # "note", "paper-note", "legend" (HTML only)


@dataclass
class Image:
    path: Path
    alt: str
    caption: str


@dataclass
class Figures:
    """Images shown side by side."""

    images: list[Image]


@dataclass
class Section:
    title: str
    anchor: str
    blocks: list["Block"]
    level: int = 2
    badge: str = ""   # e.g. "paper": a label next to the heading


Block = Union[Table, Paragraph, Figures, Section]


@dataclass
class Document:
    title: str
    intro: list[Paragraph]
    sections: list[Section]
    footer: str = ""


# -- formatting ------------------------------------------------------------------------
def _missing(value: Any) -> bool:
    """None, NaN and pandas' NA (a scalar check: never called on containers)."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def fmt_pct(value: Any, sd: Any = None) -> str:
    """``99.50`` or ``99.50 ± 0.71`` (blank when missing)."""
    if _missing(value):
        return ""
    return f"{value:.2f}" + ("" if _missing(sd) else f" ± {sd:.2f}")


def fmt_count(value: Any) -> str:
    """Three significant digits with an SI suffix: ``3.75k``, ``1.25M``, ``372``."""
    if _missing(value):
        return ""
    for scale, suffix in _SI:
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def fmt_value(column: Column, value: Any, sd: Any = None) -> str:
    """Display text of one value of ``column``."""
    if column.kind == "pct":
        return fmt_pct(value, sd)
    if _missing(value):
        return ""
    if column.kind == "count":
        return fmt_count(value)
    if column.kind == "ratio":
        return f"{value:.3f}"
    if column.kind == "int":
        return str(int(value))
    if column.kind == "flag":
        return "yes" if bool(value) else ""
    return str(value)


def _sort_value(value: Any) -> str:
    if _missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, numbers.Number):
        return repr(float(value))
    return str(value)


# -- builders --------------------------------------------------------------------------
def measured_table(table: TaskTable) -> Table:
    """The ranking table of a task."""
    rows, classes = [], []
    for index, rec in table.frame.iterrows():
        best = table.best.get(int(index), set())
        cells = []
        for col in table.columns:
            value = rec[col.key]
            sd = rec[col.sd_key] if col.sd_key else None
            cells.append(Cell(fmt_value(col, value, sd), _sort_value(value), col.key in best))
        rows.append(cells)
        classes.append(" ".join(c for c in ("reference" if rec["reference"] else "",
                                            "pareto" if rec["pareto"] else "") if c))
    return Table(headers=[c.header for c in table.columns], rows=rows, kind="measured",
                 numeric=[c.kind != "text" for c in table.columns], table_id=f"lb-{slug(table.task)}",
                 row_classes=classes)


def ablation_table(ablation: AblationTable) -> Table:
    pivot = ablation.pivot
    headers = [pivot.index.name or "settings"] + [str(c) for c in pivot.columns]
    rows = []
    for index, values in pivot.iterrows():
        rows.append([Cell(str(index), str(index))] + [Cell(fmt_pct(v), _sort_value(v)) for v in values])
    return Table(headers=headers, rows=rows, kind="ablation", numeric=[False] + [True] * len(pivot.columns),
                 table_id=f"ab-{slug(ablation.task)}-{slug(ablation.model)}",
                 caption=f"{ablation.metric_name} (%) at T={ablation.chosen_T} for each combination of the varied "
                         "settings (mean over seeds)")


def paper_table(paper: PaperTable, index: int) -> Table:
    frame = paper.frame
    headers = list(frame.columns)
    numeric = [h not in ("kind", "model", "coding", "threshold rule", "source", "note") for h in headers]
    rows = [[Cell(str(v), str(v)) for v in rec] for rec in frame.itertuples(index=False)]
    return Table(headers=headers, rows=rows, kind="paper", numeric=numeric,
                 table_id=f"paper-{slug(paper.benchmark)}-{index}", row_classes=["paper"] * len(rows))


def failed_table(frame: pd.DataFrame) -> Table:
    headers = list(frame.columns)
    rows = [[Cell("" if _missing(v) else str(v), _sort_value(v)) for v in rec] for rec in frame.itertuples(index=False)]
    return Table(headers=headers, rows=rows, kind="failed", numeric=[h in ("seed", "T_max") for h in headers],
                 table_id="failed-cells", row_classes=["failed"] * len(rows))


def slug(text: str) -> str:
    """A name safe in HTML ids and file names."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in str(text)).strip("-").lower() or "x"



