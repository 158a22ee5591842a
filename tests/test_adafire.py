"""AdaFire / Adaptive Calibration (methods/adafire/: method, burst, search, timesteps)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.fx as fx
from torch import nn

from snnbench.counting import OpCounter
from snnbench.methods.adafire.burst import BurstNetwork, BurstNeuron
from snnbench.methods.adafire.method import AdaFire, AdaFireSettings, _require_classifier
from snnbench.methods.adafire.search import pareto_select, symmetric_kl
from snnbench.methods.adafire.timesteps import (AdaptiveTimestepNetwork, confidence_score, thresholds_from_entropies)
from snnbench.methods.base import ConversionContext
from snnbench.methods.settings import SettingsError, settings_from_dict
from snnbench.methods.snn.stats import StatKind, burst_floor_quantise, collect_stats, mse_grid_search
from snnbench.runner import simulate
from snnbench.tasks.classification import TopKAccuracy


# -- the burst neuron --------------------------------------------------------------------
def test_burst_neuron_hand_trace_cap_and_residual():
    """θ = 1, cap 2, T = 4 (shift 1/8 per step); hand-computed v and k."""
    neuron = BurstNeuron(torch.tensor(1.0), maxspike=2, sim_length=4)
    inputs = [3.0, 0.0, 0.5, 2.9]
    # t1: v = 3.125 -> floor 3, capped at 2 -> v = 1.125
    # t2: v = 1.25 -> 1 -> v = 0.25;  t3: v = 0.875 -> 0;  t4: v = 3.9 -> 3, capped 2 -> v = 1.9
    expected_out, expected_v = [2.0, 1.0, 0.0, 2.0], [1.125, 0.25, 0.875, 1.9]
    for x, out, v in zip(inputs, expected_out, expected_v):
        s = neuron(torch.tensor([x]))
        assert s.item() == pytest.approx(out)
        assert neuron.v.item() == pytest.approx(v)
    neuron.reset()
    assert neuron(torch.tensor([-5.0])).item() == 0.0  # no negative bursts, the deficit is kept
    assert neuron.v.item() == pytest.approx(-4.875)


def test_burst_neuron_amplitude_theta_and_silent_channel():
    theta = torch.tensor([0.5, 0.0]).view(1, 2)
    neuron = BurstNeuron(theta, maxspike=4, sim_length=2)
    out = neuron(torch.tensor([[1.3, 7.0]]))  # v = 1.3 + 0.125 -> floor(2.85) = 2 bursts of 0.5
    assert out.tolist() == [[1.0, 0.0]]


def test_burst_mean_output_is_the_shifted_quantiser():
    """A constant input a for T steps decodes to the burst grid quantiser of a + θ/(2T) (unsaturated)."""
    torch.manual_seed(0)
    theta, cap, T = torch.tensor(0.7), 3, 5
    a = torch.rand(200) * 3
    neuron = BurstNeuron(theta, maxspike=cap, sim_length=T)
    total = sum(neuron(a) for _ in range(T))
    # Σ_t k_t = floor(v_T/θ) as long as the cap never binds early; compare with the
    # quantiser of the input shifted by half a step of the T-step grid
    expected = burst_floor_quantise(a + theta / (2 * T), theta, T, cap) * T
    binds = a + theta / (2 * T) > cap * theta  # saturated: capped at cap per step
    assert torch.allclose(total[~binds], expected[~binds], atol=1e-5)
    assert torch.allclose(total[binds], torch.full_like(total[binds], cap * T * 0.7), atol=1e-5)


# -- the burst-aware MSE grid ----------------------------------------------------------
def test_burst_quantiser_equals_formula():
    torch.manual_seed(1)
    a = torch.randn(500) * 3
    theta, T, K = 0.37, 6, 4
    reference = torch.tensor([math.floor(min(max(v / theta, 0.0), K) * T) * theta / T for v in a.tolist()])
    assert torch.allclose(burst_floor_quantise(a, torch.tensor(theta), T, K), reference, atol=1e-6)


def test_mse_grid_with_burst_cap_is_the_argmin_of_its_candidates():
    torch.manual_seed(2)
    rows = torch.relu(torch.randn(3, 400)) * torch.tensor([[1.0], [2.0], [0.3]])
    T, K = 4, 8
    got = mse_grid_search(rows, T, maxspike=K)
    for r in range(3):
        top = float(rows[r].max())
        errs = []
        for i in range(95):
            th = top * (1 - 0.01 * i)
            q = torch.tensor([math.floor(min(max(v / th, 0.0), K) * T) * th / T for v in rows[r].tolist()])
            errs.append(float(((rows[r] - q) ** 2).mean()))
        best = min(range(95), key=lambda i: (errs[i], i))
        assert got[r].item() == pytest.approx(top * (1 - 0.01 * best), rel=1e-5)
    # a larger cap reaches the same range with a smaller θ
    assert (got < mse_grid_search(rows, T, maxspike=1)).all()


def test_stat_kind_key_unchanged_for_single_spike_grid():
    plain = StatKind("mse_grid", levels=4)
    assert "maxspike" not in plain.key()
    assert StatKind("mse_grid", levels=4, maxspike=8).key() != plain.key()


# -- the frontier DP ---------------------------------------------------------------------
def _brute_force(loss, cost, budget):
    best = None
    for picks in itertools.product(*[range(len(r)) for r in loss]):
        c = sum(cost[l][j] for l, j in enumerate(picks))
        s = sum(loss[l][j] for l, j in enumerate(picks))
        if c <= budget and (best is None or s < best[0]):
            best = (s, c, picks)
    return best


def test_pareto_select_respects_budget_and_is_optimal():
    loss = [[5.0, 2.0, 0.5], [4.0, 1.0, 0.2], [3.0, 2.5, 0.1]]
    cost = [[1.0, 3.0, 6.0], [2.0, 4.0, 9.0], [1.0, 2.0, 8.0]]
    for budget in (4.0, 7.0, 9.5, 12.0, 15.0, 23.0):
        picks = pareto_select(loss, cost, budget)
        ref = _brute_force(loss, cost, budget)
        assert picks is not None
        assert sum(cost[l][j] for l, j in enumerate(picks)) <= budget
        assert sum(loss[l][j] for l, j in enumerate(picks)) == pytest.approx(ref[0])
    assert pareto_select(loss, cost, 3.9) is None  # the cheapest selection costs 4


def test_pareto_select_random_tables_match_brute_force():
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        loss = torch.rand(4, 3, generator=gen).tolist()
        cost = (torch.rand(4, 3, generator=gen) * 10).tolist()
        budget = float(torch.rand(1, generator=gen)) * 30
        picks, ref = pareto_select(loss, cost, budget), _brute_force(loss, cost, budget)
        if ref is None:
            assert picks is None
        else:
            assert sum(loss[l][j] for l, j in enumerate(picks)) == pytest.approx(ref[0])


def test_symmetric_kl_hand_value():
    p, q = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.9, 0.1]])
    kl_pq = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    kl_qp = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert symmetric_kl(p, q) == pytest.approx((kl_pq + kl_qp) / 2)


# -- IAT -----------------------------------------------------------------------------------
class _ScriptedIAT(AdaptiveTimestepNetwork):
    """IAT over a scripted per-step output sequence (rate coding: the estimate is their running mean)."""

    def __init__(self, steps: list[torch.Tensor], thresholds: list[float]) -> None:
        from snnbench.methods.snn.network import SimulatedNetwork

        inner = SimulatedNetwork(fx.symbolic_trace(nn.Identity()), coding="rate")
        super().__init__(inner, thresholds)
        self.steps = steps

    def step(self, frame):
        return self.steps[self.frame - 1]


class _Bundle:
    def prepare(self, inputs):
        return inputs, None

    def finish(self, out, meta):
        return out


class _Task:
    def new_metric(self):
        return TopKAccuracy()


def test_iat_freezes_exited_samples_and_counts_steps():
    # sample 0: confident at t = 2 for class 0, then its running logits swing to class 1;
    # sample 1: never confident (uniform), runs all 4 steps; its label is class 1
    steps = [torch.tensor([[0.0, 0.0], [0.0, 0.0]]),
             torch.tensor([[40.0, 0.0], [0.0, 0.0]]),
             torch.tensor([[-200.0, 0.0], [0.0, 0.1]]),
             torch.tensor([[-200.0, 0.0], [0.0, 0.1]])]
    net = _ScriptedIAT(steps, thresholds=[0.9, 0.9, 0.9, 0.9])
    x = torch.zeros(2, 1)
    outs = [o.clone() for o in net.simulate(x, 4)]
    assert outs[1][0].argmax() == 0 and outs[2][0].argmax() == 0 and outs[3][0].argmax() == 0
    assert torch.equal(outs[3][0], outs[1][0])  # the t = 2 output, frozen
    net.reset()
    metrics, summary = simulate(net, _Task(), _Bundle(), [(x, torch.tensor([0, 1]))], T=4)
    assert summary.steps == pytest.approx([1.0, 2.0, 2.5, 3.0])  # (2 + 4)/2 = 3 steps per sample at T
    assert summary.steps_histogram == {2: 1, 4: 1}
    assert metrics[4]["top1"] == 1.0  # sample 0 keeps class 0 although its logits say 1 by then
    assert metrics[1]["top1"] == 0.5  # ties: argmax picks class 0 for both


def test_confidence_score_and_threshold_formula():
    assert confidence_score(torch.tensor([[0.0, 0.0, 0.0]])).item() == pytest.approx(0.0)
    assert confidence_score(torch.tensor([[100.0, 0.0, 0.0]])).item() == pytest.approx(1.0)
    thr = thresholds_from_entropies([0.3, 0.1, None])
    assert thr == pytest.approx([0.995 + 0.005 * math.exp(-0.2), 1.0, 1.0])


# -- counting with an active mask and bursts -------------------------------------------
def _tiny_adafire(cap: int, T: int):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(16, 6)
    method = AdaFire({"search": False, "ssc": False, "iat": False, "mode": "grid", "maxspike": cap})
    ctx = ConversionContext(T=T, example=x[:4], calib_batches=lambda: iter([x]))
    stats = collect_stats(model, [x], method.stat_kinds(model, ctx))
    return method.convert(model, stats, ctx), model, x


def test_bursts_count_unit_spikes_and_events_and_fairness():
    snn, _, x = _tiny_adafire(cap=4, T=3)
    assert isinstance(snn, BurstNetwork)
    fair = snn.fairness()
    assert fair.max_spikes_per_step == 4 and fair.levels_per_step == pytest.approx(math.log2(5))
    neuron = next(m for m in snn.modules() if isinstance(m, BurstNeuron))
    outs = []
    handle = neuron.register_forward_hook(lambda m, a, o: outs.append(o.clone()))
    with OpCounter(snn, 3) as counter:
        snn.reset()
        for _ in snn.simulate(x, 3):
            pass
        counter.add_samples(x.shape[0])
    handle.remove()
    summary = counter.summary()
    k = torch.stack(outs) / neuron.theta
    assert k.max() > 1  # some bursts happened
    assert summary.events[-1] * 16 == pytest.approx(float((k > 0).sum()))
    assert summary.unit_spikes[-1] * 16 == pytest.approx(float(k.round().sum()), rel=1e-6)


def test_counter_honours_active_mask():
    snn, _, x = _tiny_adafire(cap=2, T=3)

    class Masked(BurstNetwork):
        def simulate(self, x, T):
            for t, out in enumerate(super().simulate(x, T), start=1):
                yield out

        def step(self, frame):
            # from frame 2 on only the first 5 samples compute
            self.active = torch.arange(frame.shape[0]) < (16 if self.frame == 1 else 5)
            return super().step(frame)

    masked = Masked(snn.net, coding="rate")
    neuron = next(m for m in masked.modules() if isinstance(m, BurstNeuron))
    outs, firsts = [], []
    handle = neuron.register_forward_hook(lambda m, a, o: outs.append(o.clone()))
    with OpCounter(masked, 3) as counter:
        masked.reset()
        for _ in masked.simulate(x, 3):
            firsts.append(masked.active.clone())
        counter.add_samples(16)
    handle.remove()
    summary = counter.summary()
    k = torch.stack(outs) / neuron.theta  # [T, 16, 8]
    mask = torch.stack(firsts)[:, :, None]
    assert summary.unit_spikes[-1] * 16 == pytest.approx(float((k * mask).round().sum()), rel=1e-6)
    assert summary.events[-1] * 16 == pytest.approx(float(((k > 0) & mask).sum()))
    # the second linear layer is fed by the spikes: 3 ACs per non-zero input of an active sample
    acs = 3 * float(((k > 0) & mask).sum())
    assert summary.acs[-1] * 16 == pytest.approx(acs)
    fc2 = next(layer for layer in summary.layers if layer["type"] == "linear" and layer["input"] == "spike")
    assert fc2["input_nonzero"][-1] * 16 == pytest.approx(float(((k > 0) & mask).sum()))
    assert fc2["input_numel"] == 8


# -- settings and errors -------------------------------------------------------------------
def test_settings_defaults_and_errors():
    s = settings_from_dict(AdaFireSettings, {})
    assert (s.maxspike, s.minspike, s.initialspike, s.maxspike_ratio, s.threshold_ratio, s.metric) == \
        (8, 2, 16, 0.95, 0.95, "kl")
    assert s.granularity == "channel" and s.search and s.ssc and s.iat
    with pytest.raises(SettingsError, match="minspike"):
        settings_from_dict(AdaFireSettings, {"minspike": 9})
    with pytest.raises(SettingsError, match="burst neurons"):
        settings_from_dict(AdaFireSettings, {"coding": "differential", "mode": "grid"})
    with pytest.raises(SettingsError, match="metric"):
        settings_from_dict(AdaFireSettings, {"metric": "accuracy"})


def test_iat_refuses_dense_outputs_naming_why():
    seg = nn.Conv2d(1, 3, 1)
    ctx = ConversionContext(T=2, example=torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="detection or segmentation.*1 - H"):
        _require_classifier(seg, ctx, settings_from_dict(AdaFireSettings, {"search": False, "ssc": False}))


@pytest.mark.slow
def test_full_pipeline_on_digits(digits_task, digits_vgg):
    """Search, SSC, bias correction and IAT on digits: runs, respects its budgets, exits early."""
    from snnbench.cell import CellSpec
    from snnbench.runner import run_cell

    spec = CellSpec(method="adafire", task="digits", model="vgg_small", T=4, eval_size=64, calib_size=64,
                    settings={"search_samples": 32, "maxspike": 4, "initialspike": 6, "correction_samples": 32})
    r = run_cell(spec)
    assert r["status"] == "ok", r["error"]
    conv = r["conversion"]
    caps = conv["maxspike_per_layer"]
    assert all(2 <= k <= 6 for k in caps)
    search = conv["cap_search"]
    if search["feasible"]:
        assert search["cost"] <= search["budget"] + 1e-9
    assert r["fairness"]["max_spikes_per_step"] == max(caps)
    steps = [r["per_t"][str(t)]["steps_per_sample"] for t in range(1, 5)]
    assert steps[0] == 1.0 and all(b >= a for a, b in zip(steps, steps[1:])) and steps[-1] <= 4.0
    hist = r["adaptive_timesteps"]["steps_histogram"]
    assert sum(hist.values()) == 64
    assert sum(int(k) * v for k, v in hist.items()) / 64 == pytest.approx(steps[-1])
    assert r["per_t"]["4"]["unit_spikes_per_sample"] >= r["per_t"]["4"]["spikes_per_sample"]


def test_batched_candidates_equal_one_at_a_time():
    """The searches evaluate candidates side by side in one batch: same numbers as one by one."""
    from snnbench.methods.adafire.search import (_UnitSpikeMeter, layer_table, sensitivity, snn_mean_output,
                                                 _scale_threshold, _set_cap)

    snn, model, x = _tiny_adafire(cap=4, T=3)
    neurons = [m for m in snn.modules() if isinstance(m, BurstNeuron)]
    ann = model(x).detach()
    for apply, candidates in ((_set_cap, [1, 2, 3]), (_scale_threshold, [1.0, 1.5, 4.0])):
        loss, cost = layer_table(snn, neurons, x, 3, ann, candidates, apply, "kl")
        for j, c in enumerate(candidates):
            neuron = neurons[0]
            old_cap, old_theta = neuron.maxspike, neuron.theta.clone()
            if apply is _set_cap:
                neuron.maxspike = c
            else:
                neuron.theta = old_theta * c
            meter = _UnitSpikeMeter(neuron)
            out = snn_mean_output(snn, x, 3)
            meter.close()
            neuron.maxspike, neuron.theta = old_cap, old_theta
            assert loss[0][j] == pytest.approx(sensitivity(out, ann, "kl"), rel=1e-4, abs=1e-7)
            assert cost[0][j] == pytest.approx(float(meter.total.sum()), rel=1e-6)
