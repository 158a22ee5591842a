"""``bench leaderboard``: render the leaderboard of a results directory at any time.

    bench leaderboard [--results DIR] [--out DIR] [--T N] [--from-mlflow [--experiment NAME]]
                      [--per-seed] [--layers-cell KEY]

Wire it into ``bench/cli.py`` with :func:`add_leaderboard_parser` and
:func:`cmd_leaderboard` (see their docstrings).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_RESULTS = "results"


def add_leaderboard_parser(subparsers: Any) -> None:
    """Add the ``leaderboard`` sub-command to an argparse ``add_subparsers()`` object."""
    p = subparsers.add_parser(
        "leaderboard", help="render the leaderboard (HTML, CSV, Markdown, plots) of a results directory",
        description="Build the leaderboard from the sweep ledger (or the MLflow runs) of DIR: per task a sortable "
                    "table of the ANN and SNN metric at each T, the T reaching 99%% of the ANN, spikes, synaptic "
                    "operations and energy ratio at a chosen T; plots; ablation pivots; failed cells; published "
                    "reference rows kept apart. Writes leaderboard.html (self-contained), leaderboard.csv, "
                    "leaderboard.md and PNGs.")
    p.add_argument("--results", default=DEFAULT_RESULTS, metavar="DIR",
                   help=f"results directory written by bench sweep (default {DEFAULT_RESULTS})")
    p.add_argument("--out", default=None, metavar="DIR", help="output directory (default DIR/leaderboard)")
    p.add_argument("--T", dest="T", type=int, default=None,
                   help="T of the spikes/SynOps/energy columns and the Pareto plot (default: per task, the largest "
                        "T every row reached)")
    p.add_argument("--from-mlflow", action="store_true",
                   help="read the runs in sqlite:///DIR/mlflow.db instead of DIR/ledger.jsonl")
    p.add_argument("--experiment", default=None,
                   help="with --from-mlflow: only this MLflow experiment (default: all)")
    p.add_argument("--per-seed", action="store_true",
                   help="one row per seed (default: seeds of a configuration averaged, ± sample std)")
    p.add_argument("--energy-model", default=None, metavar="NAME",
                   help="energy convention of every energy column (default horowitz45nm-v1; "
                        "see README 'Energy accounting')")
    p.add_argument("--layers-cell", default=None, metavar="CELL_KEY",
                   help="cell (cell_key or a prefix) whose per-layer spikes are plotted (default: the best SNN row)")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """Render and print the written paths; 2 with a message when there is nothing to render."""
    from snnbench.leaderboard.data import LeaderboardError
    from snnbench.leaderboard.render import render_leaderboard

    if getattr(args, "experiment", None) and not getattr(args, "from_mlflow", False):
        print("bench leaderboard: error: --experiment needs --from-mlflow", file=sys.stderr)
        return 2
    try:
        paths = render_leaderboard(getattr(args, "results", DEFAULT_RESULTS) or DEFAULT_RESULTS,
                                   getattr(args, "out", None), getattr(args, "T", None),
                                   from_mlflow=getattr(args, "from_mlflow", False),
                                   experiment=getattr(args, "experiment", None),
                                   per_seed=getattr(args, "per_seed", False),
                                   layers_cell=getattr(args, "layers_cell", None),
                                   energy_model=getattr(args, "energy_model", None))
    except LeaderboardError as err:
        print(f"bench leaderboard: error: {err}", file=sys.stderr)
        return 2
    for path in paths.values():
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m snnbench.leaderboard.cli``: the sub-command on its own (until bench/cli.py wires it)."""
    parser = argparse.ArgumentParser(prog="bench")
    add_leaderboard_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return cmd_leaderboard(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
