"""`bench compare` and the leaderboard's tied groups: paired tests on saved per-sample outcomes,
checked against statsmodels on known data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from snnbench.cli import main
from snnbench.common.outcomes import BinaryOutcomes, ConfusionOutcomes, samples_path, save_outcomes
from snnbench.compare import CompareError, block_groups, compare_methods, tied_groups
from snnbench.ledger import Ledger


def _cell(results, method, task, model, correct_by_t, key=None):
    key = key or f"{method}-{task}-{model}"
    Ledger(results).append({"cell_key": key, "method": method, "task": task, "model": model, "metric": "top1",
                            "status": "ok", "T": max(correct_by_t)})
    ts = sorted(correct_by_t)
    save_outcomes(samples_path(results, key),
                  BinaryOutcomes(t=np.array(ts), correct=np.array([correct_by_t[t] for t in ts], dtype=bool)))
    return key


@pytest.fixture
def two_methods(tmp_path):
    rng = np.random.default_rng(3)
    n = 400
    truth = {}
    for model, (pa, pb) in {"m1": (0.9, 0.8), "m2": (0.7, 0.7)}.items():
        a = rng.random(n) < pa
        b = rng.random(n) < pb
        _cell(tmp_path, "dcgs", "digits", model, {1: rng.random(n) < 0.5, 4: a})
        _cell(tmp_path, "rate", "digits", model, {2: rng.random(n) < 0.5, 4: b})
        truth[model] = (a, b)
    return tmp_path, truth


def test_paired_binary_comparison_matches_statsmodels(two_methods):
    results, truth = two_methods
    pairs = compare_methods(results, "dcgs", "rate")
    assert [(p.model, p.t, p.n) for p in pairs] == [("m1", 4, 400), ("m2", 4, 400)]
    raw = []
    for p in pairs:
        a, b = truth[p.model]
        assert p.delta == pytest.approx(a.mean() - b.mean())
        table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
        assert p.p_value == pytest.approx(mcnemar(table, exact=True).pvalue)
        assert p.delta_ci95[0] < p.delta < p.delta_ci95[1]
        assert p.test == "exact McNemar"
        raw.append(p.p_value)
    expected = multipletests(raw, method="holm")[1]
    assert [p.p_holm for p in pairs] == pytest.approx(list(expected))
    assert pairs[0].significant and not pairs[1].significant


def test_compare_at_an_unscored_step_names_the_scored_ones(two_methods):
    results, _ = two_methods
    with pytest.raises(CompareError, match=r"did not score t=2; scored steps: \[1, 4\]"):
        compare_methods(results, "dcgs", "rate", t=2)


def test_unknown_method_lists_the_methods_present(two_methods, capsys):
    results, _ = two_methods
    assert main(["compare", "--results", str(results), "--a", "dcgs", "--b", "srp"]) == 2
    err = capsys.readouterr().err
    assert "method 'srp' has no successful cell" in err and "dcgs, rate" in err


def test_missing_samples_file_says_where_it_was_expected(two_methods, capsys):
    results, _ = two_methods
    samples_path(results, "rate-digits-m2").unlink()
    assert main(["compare", "--results", str(results), "--a", "dcgs", "--b", "rate"]) == 2
    err = capsys.readouterr().err
    assert "no per-sample outcomes for cell rate-digits-m2" in err and "rate-digits-m2.npz" in err


def test_cli_json_output(two_methods, capsys):
    results, truth = two_methods
    assert main(["compare", "--results", str(results), "--a", "rate", "--b", "dcgs", "--model", "m1",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (pair,) = out["pairs"]
    a, b = truth["m1"]
    assert pair["delta"] == pytest.approx(b.mean() - a.mean())
    assert pair["p_holm"] == pytest.approx(pair["p_value"])  # one pair: Holm changes nothing
    assert set(pair) >= {"delta", "delta_ci95", "p_value", "p_holm", "test", "t", "n", "significant"}


def test_cli_table_marks_significant_pairs(two_methods, capsys):
    results, _ = two_methods
    assert main(["compare", "--results", str(results), "--a", "dcgs", "--b", "rate"]) == 0
    lines = capsys.readouterr().out.splitlines()
    m1 = next(line for line in lines if " m1 " in line)
    m2 = next(line for line in lines if " m2 " in line)
    assert m1.endswith("exact McNemar *") and m2.endswith("exact McNemar")


def test_segmentation_outcomes_use_the_paired_bootstrap(tmp_path):
    rng = np.random.default_rng(0)
    n, classes = 60, 3
    labelled = rng.integers(50, 100, size=(1, n, classes))
    hits = {}
    for method, hit in (("dcgs", 0.9), ("rate", 0.6)):
        tp = hits[method] = (labelled * hit).astype(np.int64)
        Ledger(tmp_path).append({"cell_key": method, "method": method, "task": "voc", "model": "fcn",
                                 "metric": "miou", "status": "ok"})
        save_outcomes(samples_path(tmp_path, method),
                      ConfusionOutcomes(t=np.array([4]), true_positive=tp, predicted=labelled, labelled=labelled))
    (pair,) = compare_methods(tmp_path, "dcgs", "rate")
    tp, g = hits["dcgs"][0].sum(axis=0), labelled[0].sum(axis=0)  # IoU = TP / (P + G - TP), P = G here
    assert pair.test == "paired bootstrap" and pair.a_metric == pytest.approx(float(np.mean(tp / (2 * g - tp))))
    assert pair.delta > 0 and pair.delta_ci95[0] > 0 and pair.p_value < 0.05


def test_tied_groups_are_greedy_from_the_top():
    metrics = {"a": 0.90, "b": 0.89, "c": 0.80, "d": 0.79}
    p = {frozenset(x): v for x, v in {("a", "b"): 0.5, ("a", "c"): 0.001, ("a", "d"): 0.001,
                                       ("b", "c"): 0.2, ("c", "d"): 0.3, ("b", "d"): 0.01}.items()}
    # b is tied with the leader a; c is not, though it is tied with b: it leads group 1 with d
    assert tied_groups(metrics, p) == {"a": 0, "b": 0, "c": 1, "d": 1}
    assert tied_groups({"x": 0.5}, {}) == {"x": 0}


def test_block_groups_from_saved_outcomes(tmp_path):
    n = 300
    base = np.zeros(n, dtype=bool)
    base[:240] = True  # 80 %
    near = base.copy()
    near[235:245] = ~near[235:245]  # 5 flips each way: same accuracy, not different
    far = np.zeros(n, dtype=bool)
    far[:150] = True  # 50 %
    cells = {m: {"cell_key": _cell(tmp_path, m, "digits", "mlp", {4: c}), "method": m, "task": "digits",
                 "model": "mlp"} for m, c in (("dcgs", base), ("calibration", near), ("rate", far))}
    assert block_groups(tmp_path, cells, 4) == {"calibration": 0, "dcgs": 0, "rate": 1}


def test_the_ann_reference_pairs_at_any_t(tmp_path):
    rng = np.random.default_rng(5)
    ann = rng.random(200) < 0.9
    snn = {2: rng.random(200) < 0.5, 8: ann & (rng.random(200) < 0.95)}
    Ledger(tmp_path).append({"cell_key": "ref", "method": "ann", "task": "digits", "model": "mlp", "metric": "top1",
                             "status": "ok", "reference": True})
    save_outcomes(samples_path(tmp_path, "ref"), BinaryOutcomes(t=np.array([1]), correct=ann[None]))
    _cell(tmp_path, "dcgs", "digits", "mlp", snn)
    (at_8,) = compare_methods(tmp_path, "dcgs", "ann")
    (at_2,) = compare_methods(tmp_path, "dcgs", "ann", t=2)
    assert (at_8.t, at_2.t) == (8, 2)
    assert at_8.delta == pytest.approx(snn[8].mean() - ann.mean())
    assert at_2.delta == pytest.approx(snn[2].mean() - ann.mean())


def test_a_sweep_saves_samples_and_intervals_that_bench_compare_reads(tmp_path, digits_vgg):
    from statsmodels.stats.proportion import proportion_confint

    from snnbench.common.outcomes import load_outcomes
    from snnbench.executors import SerialExecutor
    from snnbench.grid import GridOptions, expand_grid
    from snnbench.sweep import run_sweep
    from snnbench.tracking import runs_by_cell_key

    cells = expand_grid(["ann", "dcgs"], ["digits"], ["vgg_small"], {}, [0],
                        GridOptions(T=3, calib_size=100, eval_size=60))
    outcome = run_sweep(cells, tmp_path, SerialExecutor(str(tmp_path / "cache")), experiment="ci")
    assert not outcome.failed
    latest = Ledger(tmp_path).latest()
    runs = runs_by_cell_key(tmp_path, "ci")
    for key, record in latest.items():
        samples = load_outcomes(samples_path(tmp_path, key))
        assert samples.correct.shape[1] == record["n_eval"] == 60
        for k, t in enumerate(samples.t):
            row = record["per_t"][str(t)]
            hits = int(samples.correct[k].sum())
            assert hits / 60 == pytest.approx(row["metric"])
            assert row["metric_ci95"] == pytest.approx(list(proportion_confint(hits, 60, method="wilson")))
        ann_hits = round(record["ann"] * 60)
        assert record["ann_ci95"] == pytest.approx(list(proportion_confint(ann_hits, 60, method="wilson")))
        (run,) = runs[key]
        assert run["metrics"]["ann_ci95_lo"] == pytest.approx(record["ann_ci95"][0])
    (pair,) = compare_methods(tmp_path, "dcgs", "ann")
    dcgs = next(r for r in latest.values() if r["method"] == "dcgs")
    assert pair.t == 3 and pair.delta == pytest.approx(dcgs["per_t"]["3"]["metric"] - dcgs["ann"])
