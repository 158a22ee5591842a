"""``bench sweep``: run a grid of cells, resumable, logged to the ledger and MLflow.

The driver is the only writer: each finished cell is appended to
``<results>/ledger.jsonl`` (fsynced) and then logged to MLflow. Re-running a sweep skips
cells whose latest ledger record succeeded and retries failed ones; ``--force`` reruns
everything. Ctrl-C loses no finished cell: they are on disk before the next one starts
being waited for, and the sweep's parent run is marked KILLED.

Under faults: one sweep at a time per results directory (:mod:`snnbench.results_lock`,
taken before the MLflow store is opened); the ledger's torn tail is repaired before the
first append (:meth:`~snnbench.ledger.Ledger.repair_tail`); MLflow is reconciled with the
ledger when the sweep starts (:meth:`~snnbench.tracking.SweepTracker.reconcile`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snnbench.cell import CellSpec
from snnbench.common.outcomes import SAMPLES_DIR
from snnbench.cell_flags import UsageError, add_cell_flags, cell_fields, check_cell_flags
from snnbench.console import verbosity
from snnbench.grid import GridOptions, describe_cell, expand_grid, parse_list, parse_sets
from snnbench.ledger import Ledger
from snnbench.record import CellResult
from snnbench.report import SweepConsole, summary_table
from snnbench.results_lock import ResultsDirBusy, results_lock

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "snnbench"


@dataclass
class SweepOutcome:
    cells: list[CellSpec]
    skipped: list[CellSpec]
    results: list[CellResult] = field(default_factory=list)
    interrupted: bool = False
    tracker: Any = None

    @property
    def failed(self) -> list[CellResult]:
        return [r for r in self.results if not r.ok]


def dedupe(cells: list[CellSpec]) -> list[CellSpec]:
    seen: set[str] = set()
    out = []
    for cell in cells:
        key = cell.key()
        if key not in seen:
            seen.add(key)
            out.append(cell)
    return out


def run_sweep(cells: list[CellSpec], results_dir: str | Path, executor, experiment: str = DEFAULT_EXPERIMENT,
              force: bool = False, progress: bool = False, sweep_params: dict[str, Any] | None = None,
              track: bool = True, take_lock: bool = True) -> SweepOutcome:
    """Run the cells not yet finished in ``results_dir`` and record every result.

    Holds the results directory's lock throughout (``take_lock=False``: the caller holds it).

    Raises:
        ResultsDirBusy: another sweep holds ``results_dir``.
    """
    results_dir = Path(results_dir)
    with results_lock(results_dir) if take_lock else contextlib.nullcontext():
        return _run_sweep_locked(cells, results_dir, executor, experiment, force, progress, sweep_params, track)


def _run_sweep_locked(cells: list[CellSpec], results_dir: Path, executor, experiment: str, force: bool,
                      progress: bool, sweep_params: dict[str, Any] | None, track: bool) -> SweepOutcome:
    results_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(results_dir)
    ledger.repair_tail()
    cells = dedupe(cells)
    finished = set() if force else ledger.finished_keys()
    samples_dir = str((results_dir / SAMPLES_DIR).resolve())  # every cell's per-sample outcomes
    todo = [c if c.samples_dir else dataclasses.replace(c, samples_dir=samples_dir)
            for c in cells if c.key() not in finished]
    if getattr(executor, "parallel", False):  # several cells at once: the long ones first
        from snnbench.campaigns import longest_first

        todo = longest_first(todo)
    outcome = SweepOutcome(cells=cells, skipped=[c for c in cells if c.key() in finished])
    if todo and hasattr(executor, "start"):
        executor.start(len(todo))  # a pool's workers import torch while MLflow opens its store
    try:
        tracker = _open_tracker(results_dir, experiment, ledger, sweep_params, len(cells), len(todo),
                                len(outcome.skipped)) if track else None
    except BaseException:
        if hasattr(executor, "stop"):
            executor.stop()
        raise
    bar = SweepConsole(len(todo), progress)  # a line per finished cell; a bar over cells on a terminal

    def on_result(cell: CellSpec, result: CellResult) -> None:
        result = dataclasses.replace(CellResult.from_dict(result), cell_key=result.get("cell_key") or cell.key(),
                                     record_id=uuid.uuid4().hex,   # ties the MLflow run to this very record
                                     sweep={"results_dir": str(results_dir), "experiment": experiment,
                                            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        ledger.append(result)          # the ledger first: it is the source of truth
        if tracker is not None:
            try:
                result = dataclasses.replace(result, mlflow_run_id=tracker.log_cell(result))
            except Exception as err:  # noqa: BLE001 - MLflow trouble must not lose the ledger record
                log.warning("MLflow logging of %s failed: %s", cell.label(), err)
        outcome.results.append(result)
        bar.done(cell, result)

    status = "FINISHED"
    try:
        executor.run(todo, bar.start, on_result)
    except KeyboardInterrupt:
        outcome.interrupted = True
        status = "KILLED"
        raise
    finally:
        bar.close()
        if tracker is not None:
            tracker.finish(status, {"ok": len(outcome.results) - len(outcome.failed), "failed": len(outcome.failed),
                                    "skipped": len(outcome.skipped)})
        outcome.tracker = tracker
    return outcome


def _open_tracker(results_dir: Path, experiment: str, ledger: Ledger, sweep_params: dict[str, Any] | None,
                  cells: int, to_run: int, skipped: int):
    """The sweep's MLflow parent run, reconciled with the ledger (:class:`~snnbench.tracking.SweepTracker`)."""
    from snnbench.provenance import git_revision, package_versions
    from snnbench.tracking import SweepTracker

    git = git_revision()
    tags = {"snnbench.sweep": "true", "git.sha": git.get("sha") or "", "git.dirty": str(git.get("dirty")),
            "command": " ".join(sys.argv), **{f"version.{k}": v for k, v in package_versions().items()}}
    params = dict(sweep_params or {}, cells=cells, to_run=to_run, skipped=skipped)
    tracker = SweepTracker(results_dir, experiment, params, tags)
    try:
        tracker.reconcile(ledger.latest())
    except Exception as err:  # noqa: BLE001 - MLflow trouble must not stop the ledger
        log.warning("reconciling MLflow with the ledger failed: %s", err)
    return tracker


# -- CLI -------------------------------------------------------------------------------
def add_sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a grid of cells (methods x tasks x models x settings x seeds)",
                       description="Run every (method, task, model, --set combination, seed) cell, in parallel on "
                                   "Ray or serially, log each to the ledger and MLflow, and print a summary. With "
                                   "no arguments: the embedded-default campaign.")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: every built-in method)")
    p.add_argument("--tasks", default=None, help="comma-separated tasks (default: the embedded tasks)")
    p.add_argument("--models", default=None, help="comma-separated models (default: the task's sweep models)")
    p.add_argument("--executor", choices=("serial", "pool", "ray"), default="serial",
                   help="serial: one cell after another in this process; pool: --workers local processes, "
                        "longest cells first; ray: Ray tasks (default serial)")
    p.add_argument("--workers", type=int, default=None,
                   help="cells run side by side by the pool executor (default 2; 1 on a one-CPU machine)")
    p.add_argument("--ray-address", default="local", help="local (start one here), auto, or HOST:PORT")
    p.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a local Ray instance (default: all)")
    p.add_argument("--cpus-per-cell", type=float, default=1.0, help="Ray CPUs reserved per cell")
    p.add_argument("--retries", type=int, default=1, help="retries of a cell whose worker died (ray)")
    p.add_argument("--cell-timeout", type=float, default=None, help="seconds before a cell is failed")
    p.add_argument("--results", default="results", help="results directory (ledger, mlflow.db, caches)")
    p.add_argument("--experiment", default=None, help="MLflow experiment (campaign) name")
    p.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    p.add_argument("--force", action="store_true", help="rerun cells that already finished")
    p.add_argument("--no-mlflow", action="store_true", help="write the ledger only")
    p.add_argument("--no-leaderboard", action="store_true", help="do not render the leaderboard at the end")
    add_cell_flags(p, "sweep")


def parse_seeds(text: str) -> list[int]:
    """``--seeds 0,1,2`` -> ``[0, 1, 2]``; anything else is a usage error naming the flag."""
    seeds = []
    for item in parse_list(text):
        try:
            seeds.append(int(item))
        except ValueError:
            raise UsageError(f"--seeds expects comma-separated integers, got {item!r}") from None
    return seeds or [0]


def check_sweep_flags(args: argparse.Namespace) -> None:
    """Validate what ``bench run`` validates (:func:`snnbench.cell_flags.check_cell_flags`) plus the sweep's own flags.

    Raises:
        UsageError: naming the flag (exit status 2); nothing is rewritten silently.
    """
    check_cell_flags(args)
    if args.retries < 0:
        raise UsageError(f"--retries must be 0 or more, not {args.retries}")
    if args.cell_timeout is not None and not args.cell_timeout > 0:
        raise UsageError(f"--cell-timeout must be a positive number of seconds, not {args.cell_timeout}")
    if not args.cpus_per_cell > 0:
        raise UsageError(f"--cpus-per-cell must be positive, not {args.cpus_per_cell}")
    if args.ray_cpus is not None and args.ray_cpus < 1:
        raise UsageError(f"--ray-cpus must be at least 1, not {args.ray_cpus}")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, not {args.workers}")


def grid_from_args(args: argparse.Namespace) -> tuple[list[CellSpec], dict[str, Any]]:
    """Build the cells; no methods/tasks/models given means the embedded campaign."""
    from snnbench.campaigns import EMBEDDED_CAMPAIGN
    from snnbench.cell import DEFAULT_CALIB_SIZE, DEFAULT_T

    check_sweep_flags(args)
    campaign = args.methods is None and args.tasks is None and args.models is None
    methods = parse_list(args.methods) if args.methods else EMBEDDED_CAMPAIGN.methods()
    tasks = parse_list(args.tasks) if args.tasks else list(EMBEDDED_CAMPAIGN.tasks)
    models = parse_list(args.models) if args.models else None
    seeds = parse_seeds(args.seeds)
    T = args.T if args.T is not None else (EMBEDDED_CAMPAIGN.T if campaign else DEFAULT_T)
    eval_sizes = tuple(EMBEDDED_CAMPAIGN.eval_sizes.items()) if campaign and args.eval_size is None else ()
    if args.calib_size is not None:
        calib_size = args.calib_size
    else:
        calib_size = EMBEDDED_CAMPAIGN.calib_size if campaign else DEFAULT_CALIB_SIZE
    options = GridOptions(T=T, calib_size=calib_size, task_eval_sizes=eval_sizes, **cell_fields(args))
    cells = expand_grid(methods, tasks, models, parse_sets(args.sets), seeds, options)
    if campaign:
        cells = [c for c in cells if EMBEDDED_CAMPAIGN.includes(c)]
    params = {"methods": ",".join(methods), "tasks": ",".join(tasks), "models": ",".join(models or []),
              "T": T, "sets": ";".join(args.sets), "seeds": ",".join(map(str, seeds)), "executor": args.executor,
              "campaign": "embedded" if campaign else "custom"}
    return cells, params


def cmd_sweep(args: argparse.Namespace) -> int:
    cells, params = grid_from_args(args)
    if args.dry_run:
        ledger = Ledger(args.results)
        finished = ledger.finished_keys()
        for cell in cells:
            state = "done" if cell.key() in finished and not args.force else "todo"
            print(f"{cell.key()}  {state:<4}  {describe_cell(cell)}")
        print(f"{len(cells)} cells ({sum(c.key() not in finished or args.force for c in cells)} to run)")
        return 0
    executor = executor_from_args(args, str(Path(args.results).resolve() / "cache"))
    experiment = args.experiment or DEFAULT_EXPERIMENT
    try:
        with results_lock(args.results):
            return _sweep_holding_lock(args, cells, params, executor, experiment)
    except ResultsDirBusy as err:   # raised on entering only: a second sweep stops at once
        print(f"bench sweep: error: {err}", file=sys.stderr)
        return 2


def executor_from_args(args: argparse.Namespace, cache_root: str):
    """The executor ``--executor`` names, configured from the other flags."""
    from snnbench.executors import RayExecutor, SerialExecutor

    if args.executor == "ray":
        return RayExecutor(cache_root, address=args.ray_address, retries=args.retries, cell_timeout=args.cell_timeout,
                           cpus_per_cell=args.cpus_per_cell, num_cpus=args.ray_cpus)
    if args.executor == "pool":
        from snnbench.pool import DEFAULT_WORKERS, PoolExecutor
        from snnbench.threads import available_cpus

        workers = args.workers if args.workers is not None else min(DEFAULT_WORKERS, available_cpus())
        return PoolExecutor(cache_root, workers=workers, threads=args.threads, cell_timeout=args.cell_timeout)
    return SerialExecutor(cache_root, cell_timeout=args.cell_timeout, threads=args.threads,
                          progress=sys.stderr.isatty() and verbosity() >= 0)


def _sweep_holding_lock(args: argparse.Namespace, cells: list[CellSpec], params: dict[str, Any], executor,
                        experiment: str) -> int:
    """Run, summarise and render while this process is the results directory's one writer."""
    try:
        outcome = run_sweep(cells, args.results, executor, experiment=experiment, force=args.force,
                            progress=sys.stderr.isatty(), sweep_params=params, track=not args.no_mlflow,
                            take_lock=False)
    except KeyboardInterrupt:
        print("sweep interrupted; finished cells are in the ledger; rerun the same command to resume",
              file=sys.stderr)
        return 130
    if verbosity() >= 0:  # -q: errors only
        records = list(Ledger(args.results).latest_results().values())
        keys = {c.key() for c in outcome.cells}
        print(summary_table([r for r in records if r.get("cell_key") in keys], getattr(args, "energy_model", None)))
        print(f"\n{len(outcome.results)} cells run ({len(outcome.failed)} failed), {len(outcome.skipped)} already "
              f"done; ledger: {Ledger(args.results).path}")
    if not args.no_leaderboard:
        render_leaderboard_after_sweep(args, outcome)
    return 1 if outcome.failed else 0


def render_leaderboard_after_sweep(args: argparse.Namespace, outcome: SweepOutcome) -> None:
    """Render the leaderboard if the leaderboard package provides a renderer."""
    import contextlib
    import io

    try:
        from snnbench.leaderboard.render import render_after_sweep
    except ImportError:
        return
    quiet = contextlib.redirect_stdout(io.StringIO()) if verbosity() < 0 else contextlib.nullcontext()
    with quiet:
        render_after_sweep(args.results, outcome.tracker,
                           energy_model=getattr(args, "energy_model", None))
