"""Which leaderboard rows are statistically tied: rank groups instead of bare ranks.

Within one model of a task table, the measured (non-reference) rows are compared pairwise
at the chosen T on their saved per-sample outcomes (:func:`snnbench.compare.block_groups`:
exact McNemar on classification, the paired image bootstrap on mAP/mIoU, Holm-adjusted
over the model's pairs; 1000 resamples). Groups are formed greedily from the top: the best row and every
row not significantly different from it (adjusted p >= 0.05) are group 1, and so on.

A row averaged over several seeds, or a cell without a samples file (run before outcomes
were saved, or a leaderboard rendered from MLflow without the results directory), gets no
group: the model's block then shows none rather than a partial ranking.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from snnbench.compare import CompareError, block_groups

log = logging.getLogger(__name__)


def rank_groups(task_rows: pd.DataFrame, results_dir: str | Path | None, T: int) -> dict[int, int]:
    """``{row_id: group}`` (1 = best) for the rows of each model that can be paired at ``T``."""
    if results_dir is None:
        return {}
    groups: dict[int, int] = {}
    for model, block in task_rows[~task_rows["reference"]].groupby("model", sort=False):
        if len(block) < 2 or (block["cell_keys"].map(len) != 1).any() or (block["T_max"] < T).any():
            continue
        cells = {str(r["row_id"]): {"cell_key": r["cell_keys"][0], "method": r["method"], "task": r["task"],
                                    "model": r["model"]} for _, r in block.iterrows()}
        try:
            found = block_groups(results_dir, cells, T)
        except CompareError as err:
            log.info("%s/%s: no rank groups at T=%d (%s)", block["task"].iloc[0], model, T, err)
            continue
        groups.update({int(row_id): group + 1 for row_id, group in found.items()})
    return groups


def group_text(group: int | None, members: int) -> str:
    """``1``, or ``1 (tied)`` when the group holds several rows; blank without a group."""
    if group is None:
        return ""
    return f"{group} (tied)" if members > 1 else str(group)


__all__ = ["group_text", "rank_groups"]
