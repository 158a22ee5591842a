"""Results -> leaderboard: tables, plots, a self-contained HTML page, CSV and Markdown.

    from snnbench.leaderboard import render_leaderboard
    render_leaderboard("results")      # results/leaderboard/leaderboard.html, .csv, .md, plot-*.png

Modules: :mod:`~snnbench.leaderboard.data` (ledger or MLflow -> frames), :mod:`~snnbench.leaderboard.rows`
(cells -> labelled rows, seeds averaged), :mod:`~snnbench.leaderboard.tables` (ranking table,
ablation pivots, failed cells), :mod:`~snnbench.leaderboard.paper` (published rows, kept apart),
:mod:`~snnbench.leaderboard.plots`, :mod:`~snnbench.leaderboard.document` / :mod:`~snnbench.leaderboard.html` /
:mod:`~snnbench.leaderboard.markdown` (one document, two writers), :mod:`~snnbench.leaderboard.render`
(files, and logging them to the sweep's MLflow run), :mod:`~snnbench.leaderboard.cli`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_leaderboard", "render_after_sweep"]


def __getattr__(name: str) -> Any:
    # lazy: importing the package must not import pandas/matplotlib
    if name in __all__:
        from snnbench.leaderboard import render

        return getattr(render, name)
    raise AttributeError(f"module 'leaderboard' has no attribute {name!r}")
