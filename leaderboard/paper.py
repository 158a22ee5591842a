"""Published reference results (``paper_results.csv``): shown, labelled, never ranked.

The CSV transcribes the DCGS numbers collected in ``docs/dcgs-official-code.md`` §6.1-6.3
(ImageNet Table 1 rows found so far, the COCO and VOC tables and ablations from the
authors' rebuttal) with each row's source tag. Values stay text, exactly as published
(``0.10`` stays ``0.10``); uncertain settings (``4?`` in the note) are explained in the
``note`` column. Paper rows live in their own tables, one per benchmark and table kind,
and never enter a measured table, a best-value mark or a Pareto front.

The optional ``track`` column (``plain`` when empty) marks rows on specially trained ANNs:
QCFS's and SRP's rows are ``qcfs`` and are shown with the QCFS-track section of a task.
Their ``T`` is as published: SRP's excludes its pre-simulation frames (the note says how
many), so their latency is T + τ.

A published energy ratio carries its convention (``energy_model``: ``dcgs-official`` for
the DCGS rows, computed by the official counter, docs/dcgs-official-code.md §5.3) and is shown only when the
leaderboard renders that convention (:func:`under_convention`; the conventions are those of :mod:`snnbench.energy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from snnbench.leaderboard.rows import natural_key

PAPER_FILE = "paper_results.csv"
REQUIRED = ("paper", "source", "section", "table", "benchmark", "model", "method", "T", "metric", "value",
            "energy_ratio", "energy_model", "ann_value", "note")
#: group columns of a paper table, in display order (empty ones are dropped)
GROUP = ("model", "track", "ann_value", "n", "c", "coding", "threshold_rule", "source", "note")
HEADERS = {"model": "model", "track": "track", "ann_value": "ANN (%)", "n": "n", "c": "c", "coding": "coding",
           "threshold_rule": "threshold rule", "source": "source", "note": "note"}
#: the track of rows whose ``track`` cell is empty (rows written before the column existed)
DEFAULT_TRACK = "plain"


@dataclass
class PaperTable:
    """One published table: rows of one benchmark and table kind, pivoted over T."""

    benchmark: str
    kind: str          # "main" or "ablation"
    paper: str
    section: str
    metric: str
    frame: pd.DataFrame   # display headers -> text values


def paper_path() -> Path:
    """The packaged CSV (``leaderboard/paper_results.csv``)."""
    return Path(str(resources.files("snnbench.leaderboard") / PAPER_FILE))


def load_paper(path: str | Path | None = None) -> pd.DataFrame:
    """The published rows as text; raises ``ValueError`` naming missing columns."""
    frame = pd.read_csv(path or paper_path(), dtype=str, keep_default_na=False)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"{path or paper_path()} lacks column(s) {', '.join(missing)}")
    frame = frame.fillna("")  # rows with fewer cells than the header
    if "track" not in frame.columns:
        frame["track"] = DEFAULT_TRACK
    frame["track"] = frame["track"].where(frame["track"] != "", DEFAULT_TRACK)
    return frame


def under_convention(paper: pd.DataFrame, energy_model: str) -> pd.DataFrame:
    """A copy whose energy ratios are blank except those published under ``energy_model``."""
    out = paper.copy()
    out.loc[out["energy_model"] != energy_model, "energy_ratio"] = ""
    return out


def paper_tables(paper: pd.DataFrame, benchmark: str) -> list[PaperTable]:
    """The published tables of ``benchmark`` (a task name such as ``coco``), main tables first."""
    rows = paper[paper["benchmark"] == benchmark]
    out = []
    for (kind, section, source_paper), block in rows.groupby(["table", "section", "paper"], sort=False):
        metric = block["metric"].iloc[0]
        group = [c for c in GROUP if c in block.columns and (block[c] != "").any()]
        Ts = sorted(block["T"].unique(), key=lambda t: int(t))
        has_er = (block["energy_ratio"] != "").any()
        records = []
        for key, part in block.groupby(group, sort=False):
            key = key if isinstance(key, tuple) else (key,)
            rec = {"kind": "paper", **{HEADERS[c]: v for c, v in zip(group, key)}}
            by_T = {r["T"]: r for _, r in part.iterrows()}
            for t in Ts:
                rec[f"{metric} T={t}"] = by_T[t]["value"] if t in by_T else ""
            if has_er:
                convention = ",".join(sorted({m for m in block["energy_model"] if m})) or "?"
                for t in Ts:
                    rec[f"ER T={t} ({convention})"] = by_T[t]["energy_ratio"] if t in by_T else ""
            records.append(rec)
        frame = pd.DataFrame(records)
        note = frame.pop("note") if "note" in frame else None
        source = frame.pop("source")
        frame["source"] = source
        if note is not None:
            frame["note"] = note
        out.append(PaperTable(benchmark=benchmark, kind=str(kind), paper=str(source_paper), section=str(section),
                              metric=str(metric), frame=frame))
    return sorted(out, key=lambda t: (t.kind != "main", natural_key(t.section)))


def benchmarks(paper: pd.DataFrame) -> list[str]:
    """Benchmarks with published rows, in file order."""
    return list(dict.fromkeys(paper["benchmark"]))
