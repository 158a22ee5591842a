"""``bench compare``: is method A's metric really different from method B's?

For every task and model that both methods ran (ok cells of the results ledger), the two
cells' per-sample outcomes (``<results>/samples/<cell_key>.npz``, written by the runner)
are paired on the same evaluation samples at one time-step T (default: the largest t both
cells scored) and :func:`snnbench.significance.paired_outcomes` gives

* ``delta`` = metric(A) - metric(B) on the full evaluation set,
* ``delta_ci95``: the paired-bootstrap percentile interval (10 000 image resamples, seed 0),
* ``p_value``: exact McNemar on classification (binary outcomes), the paired bootstrap's
  two-sided p-value on mAP and mIoU,
* ``p_holm``: Holm's adjustment over every pair the command printed (Holm 1979).

The ANN reference row (``bench compare --a dcgs --b ann``) saved one evaluation that stands
for every t.

A pair is significant at level 0.05 when ``p_holm < 0.05``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from snnbench.common.outcomes import Outcomes, load_outcomes, samples_path
from snnbench.ledger import Ledger
from snnbench.record import is_reference
from snnbench.significance import INTERVAL_RESAMPLES, PAIRED_RESAMPLES, holm, paired_outcomes

#: the family-wise level a Holm-adjusted p-value is held against
ALPHA = 0.05


class CompareError(ValueError):
    """Bad input to ``bench compare``: the message says what is missing and what is valid."""


@dataclass(frozen=True)
class PairResult:
    """One paired comparison of two cells at one time-step."""

    task: str
    model: str
    t: int
    metric: str
    n: int
    a: str
    b: str
    a_cell: str
    b_cell: str
    a_metric: float
    b_metric: float
    delta: float
    delta_ci95: tuple[float, float]
    p_value: float
    test: str
    p_holm: float = float("nan")

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["delta_ci95"] = list(self.delta_ci95)
        out["significant"] = self.significant
        return out


def ok_cells(results_dir: str | Path) -> list[dict[str, Any]]:
    """The latest successful record of every cell in ``results_dir``'s ledger."""
    ledger = Ledger(results_dir)
    if not ledger.path.is_file():
        raise CompareError(f"no results ledger at {ledger.path}; pass the --results directory of a sweep")
    return [r for r in ledger.latest().values() if r.get("status") == "ok"]


def _check_method(name: str, cells: Iterable[dict[str, Any]]) -> None:
    present = sorted({c["method"] for c in cells})
    if name not in present:
        raise CompareError(f"method {name!r} has no successful cell in these results; "
                           f"methods present: {', '.join(present) or '(none)'}")


def _step_index(outcomes: Outcomes, t: int, cell: dict[str, Any]) -> int:
    if is_reference(cell):  # the static ANN: one evaluation stands for every t
        return 0
    scored = [int(x) for x in outcomes.t]
    if t not in scored:
        raise CompareError(f"cell {cell['cell_key']} ({cell['method']} on {cell['task']}/{cell['model']}) did not "
                           f"score t={t}; scored steps: {scored}")
    return scored.index(t)


def _load(results_dir: str | Path, cell: dict[str, Any]) -> Outcomes:
    path = samples_path(results_dir, cell["cell_key"])
    try:
        return load_outcomes(path)
    except FileNotFoundError:
        raise CompareError(f"no per-sample outcomes for cell {cell['cell_key']} ({cell['method']} on "
                           f"{cell['task']}/{cell['model']}): expected {path}; rerun the cell with this results "
                           f"directory (bench sweep --results {results_dir} --force ...)") from None


def compare_cells(results_dir: str | Path, cell_a: dict[str, Any], cell_b: dict[str, Any],
                  t: int | None = None, resamples: int = PAIRED_RESAMPLES) -> PairResult:
    """Pair two cells of the same task and model at ``t`` (default: the largest t both scored)."""
    outcomes_a, outcomes_b = _load(results_dir, cell_a), _load(results_dir, cell_b)
    if t is None:
        steps = [set(int(x) for x in o.t) for o, c in ((outcomes_a, cell_a), (outcomes_b, cell_b))
                 if not is_reference(c)]
        common = sorted(set.intersection(*steps)) if steps else [1]
        if not common:
            raise CompareError(f"cells {cell_a['cell_key']} and {cell_b['cell_key']} share no scored time-step")
        t = common[-1]
    k_a, k_b = _step_index(outcomes_a, t, cell_a), _step_index(outcomes_b, t, cell_b)
    if outcomes_a.n != outcomes_b.n:
        raise CompareError(f"cells {cell_a['cell_key']} and {cell_b['cell_key']} scored different evaluation sets "
                           f"({outcomes_a.n} vs {outcomes_b.n} samples); run both with the same --eval-size")
    diff = paired_outcomes(outcomes_a, k_a, outcomes_b, k_b, resamples=resamples)
    return PairResult(task=cell_a["task"], model=cell_a["model"], t=t, metric=str(cell_a.get("metric")),
                      n=outcomes_a.n, a=cell_a["method"], b=cell_b["method"], a_cell=cell_a["cell_key"],
                      b_cell=cell_b["cell_key"], a_metric=float(outcomes_a.metric(k_a)[0]),
                      b_metric=float(outcomes_b.metric(k_b)[0]), delta=diff.delta, delta_ci95=diff.delta_ci95,
                      p_value=diff.p_value, test=diff.test)


def compare_methods(results_dir: str | Path, a: str, b: str, t: int | None = None, task: str | None = None,
                    model: str | None = None) -> list[PairResult]:
    """Every pairing of an ``a`` cell with a ``b`` cell on the same task and model, Holm-adjusted."""
    if a == b:
        raise CompareError(f"--a and --b name the same method {a!r}")
    cells = ok_cells(results_dir)
    _check_method(a, cells)
    _check_method(b, cells)
    chosen = [c for c in cells if (task is None or c["task"] == task) and (model is None or c["model"] == model)]
    pairs = [(ca, cb) for ca in chosen if ca["method"] == a for cb in chosen
             if cb["method"] == b and (cb["task"], cb["model"]) == (ca["task"], ca["model"])]
    if not pairs:
        where = "".join(f" {k}={v}" for k, v in (("task", task), ("model", model)) if v)
        raise CompareError(f"{a} and {b} share no task and model{where} in these results; "
                           f"{a} ran {_runs(cells, a)}, {b} ran {_runs(cells, b)}")
    results = [compare_cells(results_dir, ca, cb, t) for ca, cb in sorted(pairs, key=_pair_order)]
    adjusted = holm([r.p_value for r in results])
    return [replace(r, p_holm=p) for r, p in zip(results, adjusted)]


def _runs(cells: list[dict[str, Any]], method: str) -> str:
    return ", ".join(sorted({f"{c['task']}/{c['model']}" for c in cells if c["method"] == method}))


def _pair_order(pair: tuple[dict[str, Any], dict[str, Any]]) -> tuple[str, ...]:
    ca, cb = pair
    return ca["task"], ca["model"], ca["cell_key"], cb["cell_key"]


def _p_text(p: float) -> str:
    """A p-value; a bootstrap that never crossed zero shows the resolution of its resamples."""
    return f"<{1 / PAIRED_RESAMPLES:.0e}" if p == 0 else f"{p:.3g}"


def format_table(results: list[PairResult]) -> str:
    """A fixed-width table: one line per pair, metric values and differences in percent."""
    header = (f"{'task':<14} {'model':<18} {'T':>3} {'n':>6} {'A %':>7} {'B %':>7} {'delta %':>8} "
              f"{'95% CI of delta':>19} {'p':>9} {'p (Holm)':>9}  test")
    lines = [header, "-" * len(header)]
    for r in results:
        ci = f"[{100 * r.delta_ci95[0]:+.2f}, {100 * r.delta_ci95[1]:+.2f}]"
        mark = " *" if r.significant else ""
        lines.append(f"{r.task:<14} {r.model:<18} {r.t:>3} {r.n:>6} {100 * r.a_metric:>7.2f} {100 * r.b_metric:>7.2f} "
                     f"{100 * r.delta:>+8.2f} {ci:>19} {_p_text(r.p_value):>9} {_p_text(r.p_holm):>9}  {r.test}{mark}")
    lines.append(f"delta = A - B; * = significant at {ALPHA:g} after Holm's correction over the "
                 f"{len(results)} pair(s) above")
    return "\n".join(lines)


def tied_groups(metrics: dict[str, float], p_adjusted: dict[frozenset[str], float],
                alpha: float = ALPHA) -> dict[str, int]:
    """Rank methods into groups of statistically tied ones (0 = the best group).

    Greedy, from the top: the best remaining method leads a group, and every remaining method
    whose (adjusted) p-value against the leader is at least ``alpha`` joins it; repeat on
    the rest. A method missing a p-value against the leader is never tied to it."""
    remaining = sorted(metrics, key=lambda m: (-metrics[m], m))
    groups: dict[str, int] = {}
    group = 0
    while remaining:
        leader = remaining[0]
        members = [leader] + [m for m in remaining[1:] if p_adjusted.get(frozenset((leader, m)), 0.0) >= alpha]
        for m in members:
            groups[m] = group
        remaining = [m for m in remaining if m not in groups]
        group += 1
    return groups


def block_groups(results_dir: str | Path, cells: dict[str, dict[str, Any]], t: int,
                 resamples: int = INTERVAL_RESAMPLES) -> dict[str, int]:
    """Tied groups of one leaderboard block (one task, model and T): ``cells`` maps each row's
    name to its cell; every pair of rows is compared at ``t``, Holm-adjusted over the
    block's pairs. The leaderboard, rendered after every sweep, resamples
    :data:`~snnbench.significance.INTERVAL_RESAMPLES` times (McNemar's p is exact anyway);
    ``bench compare`` uses 10 000.

    Raises :class:`CompareError` when a cell has no samples file or did not score ``t``."""
    names = sorted(cells)
    if len(names) == 1:
        return {names[0]: 0}
    pairs = [(x, y) for i, x in enumerate(names) for y in names[i + 1:]]
    results = [compare_cells(results_dir, cells[x], cells[y], t, resamples) for x, y in pairs]
    adjusted = holm([r.p_value for r in results])
    metrics: dict[str, float] = {}
    for (x, y), r in zip(pairs, results):
        metrics[x], metrics[y] = r.a_metric, r.b_metric
    return tied_groups(metrics, {frozenset((x, y)): p for (x, y), p in zip(pairs, adjusted)})


def add_compare_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compare", help="paired significance test of two methods on the same images",
        description="Pair the per-sample outcomes of two methods' cells (same task, model and evaluation "
                    "images) at one time-step: difference, its 95% paired-bootstrap interval, the p-value "
                    "(exact McNemar on classification, paired bootstrap on mAP/mIoU) and Holm's correction.")
    p.add_argument("--results", required=True, help="results directory of a sweep (holds ledger.jsonl, samples/)")
    p.add_argument("--a", required=True, help="method A")
    p.add_argument("--b", required=True, help="method B")
    p.add_argument("--t", type=int, default=None, help="time-step to compare (default: the largest both scored)")
    p.add_argument("--task", default=None, help="only this task")
    p.add_argument("--model", default=None, help="only this model")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_compare(args: argparse.Namespace) -> int:
    results = compare_methods(args.results, args.a, args.b, t=args.t, task=args.task, model=args.model)
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, "alpha": ALPHA, "pairs": [r.to_dict() for r in results]},
                         indent=2))
    else:
        print(f"A = {args.a}, B = {args.b}  ({args.results})")
        print(format_table(results))
    return 0


__all__ = ["ALPHA", "CompareError", "PairResult", "add_compare_parser", "block_groups", "cmd_compare", "compare_cells",
           "compare_methods", "format_table", "ok_cells", "tied_groups"]
