"""``eval_ts``: which time-steps a cell scores with the task metric (counts cover every t)."""

from __future__ import annotations

import pytest

from snnbench.cell import CellSpec, resolve_eval_ts


def test_spellings_resolve_to_time_steps_and_always_include_T():
    assert resolve_eval_ts("all", 5) == [1, 2, 3, 4, 5]
    assert resolve_eval_ts("pow2", 12) == [1, 2, 4, 8, 12]
    assert resolve_eval_ts("pow2", 16) == [1, 2, 4, 8, 16]
    assert resolve_eval_ts("auto", 6) == [1, 2, 3, 4, 5, 6]              # classification's default: all
    assert resolve_eval_ts("auto", 6, task_default="pow2") == [1, 2, 4, 6]
    assert resolve_eval_ts("3,1,T", 8) == [1, 3, 8]
    with pytest.raises(ValueError, match="outside 1..T=4"):
        resolve_eval_ts("1,9", 4)
    with pytest.raises(ValueError, match="auto, all, pow2"):
        resolve_eval_ts("1,x", 4)


def test_detection_scores_powers_of_two_by_default():
    from snnbench.tasks.classification import DigitsTask
    from snnbench.tasks.detection import DetectionTask

    assert DetectionTask.default_eval_ts == "pow2" and DigitsTask.default_eval_ts == "all"


def test_the_default_keeps_cell_keys_and_another_choice_changes_them():
    base = CellSpec(method="rate", task="digits", model="vgg_small", T=4)
    assert "eval_ts" not in base.canonical()
    assert CellSpec(method="rate", task="digits", model="vgg_small", T=4, eval_ts="all").key() != base.key()


def test_a_cell_scores_only_the_asked_steps_and_counts_every_step(digits_vgg):
    from snnbench.runner import run_cell

    spec = dict(method="rate", task="digits", model="vgg_small", T=4, calib_size=100, eval_size=60)
    every = run_cell(CellSpec(**spec))
    some = run_cell(CellSpec(**spec, eval_ts="2,T"))
    assert every["status"] == some["status"] == "ok", (every["error"], some["error"])
    assert some["eval_ts"] == [2, 4] and every["eval_ts"] == [1, 2, 3, 4]
    for t in ("1", "3"):
        assert some["per_t"][t]["metric"] is None and "top1" not in some["per_t"][t]
        assert some["per_t"][t]["synops_per_sample"] == every["per_t"][t]["synops_per_sample"] > 0
    for t in ("2", "4"):
        assert some["per_t"][t]["metric"] == every["per_t"][t]["metric"] is not None
    from snnbench.report import format_result_table

    assert "    1        -" in format_result_table(some)
