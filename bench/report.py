"""How a cell result reads on the console: one line, a row of the sweep's summary, the per-t table of ``bench run``.

Every view names the cell the same way (:func:`cell_name`: ``method/model/task`` and the
settings the user set, at their resolved values), takes the metric and energy ratio at T
from the same place (:func:`at_T`) and shows a failure by the one line of its error that
names the exception (:func:`snnbench.tracebacks.error_line`).

:class:`SweepConsole` is the sweep driver's view: one line per finished cell -- label,
status, metric at T, energy ratio, wall time, ``k/N`` done and at most one summary of
captured warnings -- on stdout, so ``bench sweep > log`` reads well; on a terminal a bar
over the cells as well (tqdm, on stderr).
"""

from __future__ import annotations

import sys
from typing import Any, Mapping

from snnbench.console import QUIET, summarize, verbosity
from snnbench.tracebacks import error_line

#: the time-steps of the ``bench run`` table (those <= T, and T)
TABLE_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def cell_name(result: Mapping[str, Any], label: str | None = None) -> str:
    """``method/model/task [k=v,...]``: the settings the user set, at their resolved values."""
    settings = result.get("settings") or {}
    user_set = ((result.get("provenance") or {}).get("spec") or {}).get("settings") or {}
    shown = {k: settings.get(k, v) for k, v in user_set.items()}
    name = label or f"{result.get('method')}/{result.get('model')}/{result.get('task')}"
    if shown:
        name += " [" + ",".join(f"{k}={v}" for k, v in shown.items()) + "]"
    return name


def energy_key(energy_model: str | None) -> str:
    """The per-t key of the energy ratio under ``energy_model`` (the default convention: ``energy_ratio``)."""
    from snnbench.energy import ratio_key

    return ratio_key(energy_model) if energy_model else "energy_ratio"


def at_T(result: Mapping[str, Any]) -> dict[str, Any]:
    """The per-t row at the cell's T (empty when there is none)."""
    return (result.get("per_t") or {}).get(str(result.get("T")), {})


def format_cell_line(result: Mapping[str, Any], done: int, total: int, label: str | None = None) -> str:
    """``[k/N] label  status  metric@T  energy  wall  (warnings)`` for one finished cell."""
    width = len(str(total))
    parts = [f"[{done:>{width}}/{total}]", cell_name(result, label)]
    T = result.get("T")
    if result.get("status") == "ok":
        last = at_T(result)
        metric = result.get("metric") or "metric"
        value = last.get("metric")
        parts.append("ok")
        parts.append(f"{metric}@T{T}={value:.4f}" if isinstance(value, (int, float)) else f"{metric}@T{T}=?")
        ann = result.get("ann")
        if isinstance(ann, (int, float)):
            parts.append(f"(ANN {ann:.4f})")
        er = last.get("energy_ratio")
        parts.append(f"energy {er:.3f}" if isinstance(er, (int, float)) else "energy -")
    else:
        parts.append("FAILED")
        text = error_line(result.get("error")) if (result.get("error") or "").strip() else "no error text"
        parts.append(text[:100])
    parts.append(f"{float(result.get('wall_s') or 0.0):.1f}s")
    note = summarize(result.get("warnings") or [])
    if note:
        parts.append(f"[{note}; full text in the ledger]")
    return "  ".join(parts)


def summary_table(records: list[Mapping[str, Any]], energy_model: str | None = None) -> str:
    """Fixed-width table: one row per cell with the metric and energy ratio at T (under
    ``energy_model``, default the result's ``energy_ratio``)."""
    key = energy_key(energy_model)
    rows = []
    for r in records:
        label = cell_name(r)
        if r.get("status") == "ok":
            last = at_T(r)
            er = last.get(key)
            rows.append((label, "ok", f"{r['metric']}={last.get('metric', float('nan')):.4f}",
                         f"{r['ann']:.4f}", "" if er is None else f"{er:.3f}", f"{r.get('wall_s', 0):.1f}"))
        else:
            rows.append((label, "FAILED", error_line(r.get("error"))[:60], "", "", f"{r.get('wall_s', 0):.1f}"))
    header = ("cell", "status", "metric at T", "ANN", "energy@T", "wall s")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)


def format_result_table(result: Mapping[str, Any], steps: list[int] | None = None,
                        energy_model: str | None = None) -> str:
    """The per-t table ``bench run`` prints (energy ratio under ``energy_model``)."""
    from snnbench.energy import DEFAULT_ENERGY_MODEL

    key = energy_key(energy_model)
    lines = [f"{cell_name(result)}  status={result['status']}  wall={result['wall_s']:.1f}s"]
    if result["status"] != "ok":
        lines.append(result.get("error") or "")
        return "\n".join(lines)
    metric = result["metric"]
    lines.append(f"ANN {metric}: {result['ann']:.4f}")
    per_t = result["per_t"]
    T = result["T"]
    steps = steps or sorted({t for t in TABLE_STEPS if t <= T} | {T})
    lines.append(f"{'T':>5} {metric:>8} {'spikes/sample':>14} {'synops/sample':>14} {'energy ratio':>12}"
                 f"  [{energy_model or DEFAULT_ENERGY_MODEL.name}]")
    for t in steps:
        row = per_t[str(t)]
        er = row.get(key)
        score = "-" if row["metric"] is None else format(row["metric"], ".4f")  # t outside --eval-ts
        lines.append(f"{t:>5} {score:>8} {row['spikes_per_sample']:>14.4g} "
                     f"{row['synops_per_sample']:>14.4g} {er if er is None else format(er, '12.4f'):>12}")
    return "\n".join(lines)


class SweepConsole:
    """The driver's view of a sweep: a line per finished cell, and a bar over cells on a terminal."""

    def __init__(self, total: int, progress: bool = False, stream=None) -> None:
        self.total = total
        self.done_count = 0
        self.running: list[str] = []
        self.stream = stream if stream is not None else sys.stdout
        self.quiet = verbosity() == QUIET
        self.bar = None
        if progress and total and not self.quiet:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="sweep", unit="cell", disable=None, dynamic_ncols=True)

    def start(self, cell) -> None:
        self.running.append(cell.label())
        self._show()

    def done(self, cell, result: dict[str, Any]) -> None:
        if cell.label() in self.running:
            self.running.remove(cell.label())
        self.done_count += 1
        line = format_cell_line(result, self.done_count, self.total, label=cell.label())
        if self.quiet:  # -q: only failures, on stderr
            if result.get("status") != "ok":
                print(line, file=sys.stderr, flush=True)
        elif self.bar is not None and self.stream in (sys.stdout, sys.stderr):
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)
        if self.bar is not None:
            self.bar.update(1)
            self._show()

    def _show(self) -> None:
        if self.bar is not None:
            shown = ", ".join(self.running[:3]) + (" ..." if len(self.running) > 3 else "")
            self.bar.set_postfix_str(f"running: {shown}" if shown else "")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["SweepConsole", "at_T", "cell_name", "format_cell_line", "format_result_table", "summary_table"]
