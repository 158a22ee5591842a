"""H-MT (AAAI-26): hand-computed neuron traces, the generalized threshold iteration against brute-force
minimisation, conversion convergence, sub-spike counting and the fairness figures."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.optimize import minimize_scalar
from torch import nn

from snnbench.counting import OpCounter
from snnbench.methods.base import ConversionContext
from snnbench.methods.hmt import HMT
from snnbench.methods.hmt.harmony import HarmonyNeuron, basal_fire_reference
from snnbench.methods.snn.generalized_thresholds import generalized_quantisation_error, generalized_threshold_iteration
from snnbench.methods.snn.stats import collect_stats
from snnbench.methods.snn.thresholds import threshold_iteration

from test_conversion import ARCHITECTURES, relative_errors


def run(neuron: HarmonyNeuron, inputs: list[float]) -> tuple[list[float], list[int]]:
    """Outputs and sub-spike counts of a one-element neuron fed ``inputs``."""
    neuron.reset()
    neuron.count_spikes = True
    outs, subs = [], []
    for u in inputs:
        outs.append(float(neuron(torch.tensor([u]))))
        subs.append(int(neuron.last_subspikes.sum()))
    return outs, subs


# -- hand-computed traces -------------------------------------------------------------------------

def test_pos_neuron_trace_by_hand():
    # n = 3, λ_min = 1: thresholds 4, 2, 1 visited largest first; v[0] = 1/2
    neuron = HarmonyNeuron(torch.tensor([1.0]), n=3, part="pos")
    outs, subs = run(neuron, [2.75, 0.25, 9.0, -3.0])
    # t1: m = 3.25 -> 4 no, 2 yes (1.25), 1 yes (0.25): out 3, two sub-spikes, v = 0.25
    # t2: m = 0.5 -> nothing; t3: m = 9.5 -> 4, 2, 1 (saturated at 7), v = 2.5; t4: m = -0.5 -> nothing
    assert outs == [3.0, 0.0, 7.0, 0.0]
    assert subs == [2, 0, 3, 0]
    assert float(neuron.v_pos) == -0.5
    assert neuron.last_counts.tolist() == [0, 0]


def test_harmony_neuron_with_communication_trace_by_hand():
    # n = 2, λ_min = 1: thresholds 2, 1; v_P = v_N = 1/2; after firing v_P += x_N, v_N += x_P
    neuron = HarmonyNeuron(torch.tensor([1.0]), n=2, part="harmony", communication=True)
    neuron.reset()
    outs, subs, sums = [], [], []
    neuron.count_spikes = True
    for u in [1.75, -2.5, 0.25, 4.0]:
        outs.append(float(neuron(torch.tensor([u]))))
        subs.append(int(neuron.last_subspikes.sum()))
        sums.append(float(neuron.v_pos + neuron.v_neg))
    # t1: m_P = 2.25 -> x_P = 2 (v_P .25), m_N = -1.25 -> 0; communication: v_N = -1.25 + 2 = .75
    # t2: m_P = -2.25 -> 0, m_N = 3.25 -> x_N = 2 + 1 (v_N .25); v_P = -2.25 + 3 = .75
    # t3: m_P = 1.0 -> x_P = 1 (v_P 0), m_N = 0 -> 0; v_N = 0 + 1 = 1
    # t4: m_P = 4 -> x_P = 3 (saturated, v_P 1), m_N = -3 -> 0; v_N = -3 + 3 = 0
    assert outs == [2.0, -3.0, 1.0, 3.0]
    assert subs == [1, 2, 1, 2]
    assert sums == [1.0] * 4  # Lemma 4.1: v_P + v_N = λ_min


def test_harmony_neuron_without_communication_trace_by_hand():
    neuron = HarmonyNeuron(torch.tensor([1.0]), n=2, part="harmony", communication=False)
    outs, subs = run(neuron, [1.75, -2.5, 0.25, 4.0])
    # t1: m_P 2.25 -> 2 (v_P .25), m_N -1.25 -> 0; t2: m_P -2.25 -> 0, m_N 1.25 -> 1 (v_N .25)
    # t3: m_P -2.0 -> 0, m_N 0 -> 0; t4: m_P 2.0 -> 2 (v_P 0), m_N -4 -> 0
    assert outs == [2.0, -1.0, 0.0, 2.0]
    assert subs == [1, 1, 0, 1]


def test_pos_neuron_under_a_relu6_ceiling_keeps_the_decoded_output_below_it():
    neuron = HarmonyNeuron(torch.tensor([1.0]), n=3, part="pos", ceiling=2.0)
    outs, _ = run(neuron, [5.0, 5.0, 0.0])
    # t1: room 2: 4 no (room), 2 yes, 1 no (room 0) -> 2, v = 3.5; t2: room 2 -> 2, v = 7; t3: room 2 -> 2
    assert outs == [2.0, 2.0, 2.0]


def test_ladder_is_the_binary_expansion_of_the_clipped_floor():
    """Eq. 17: the greedy ladder over λ_min·2^k emits ⌊m/λ_min⌋ clipped to [0, 2^n - 1], bit by bit."""
    torch.manual_seed(0)
    n = 5
    lam = torch.rand(1, 7, 1) + 0.1
    m = torch.randn(64, 7, 9) * 20
    out, count = basal_fire_reference(m, lam, n)
    k = torch.floor(m / lam).clamp(0, 2**n - 1)
    assert torch.allclose(out, k * lam, rtol=1e-6, atol=1e-5)
    bits = torch.stack([(k.to(torch.int64) >> i) & 1 for i in range(n)]).sum(0)
    assert torch.equal(count, bits.to(torch.int32))


def test_communication_keeps_one_half_silent_per_step_and_eq20_holds_for_constant_input():
    torch.manual_seed(1)
    n, T = 3, 16
    lam = torch.tensor(0.5)
    neuron = HarmonyNeuron(lam, n=n, part="harmony", communication=True)
    neuron.reset()
    z = (torch.rand(500) - 0.5) * 2 * (2**n - 1) * 0.5 * 1.2  # beyond ±(2^n - 1)λ_min to test the clip
    total = torch.zeros_like(z)
    for _ in range(T):
        total += neuron(z)
        assert torch.allclose(neuron.v_pos + neuron.v_neg, torch.full_like(z, 0.5))
    # Eq. 20 with a constant input (the strong assumption holds): (λ/T)·clip(⌊(zT + λ/2)/λ⌋, ±(2^n-1)T)
    b = (2**n - 1) * T
    expected = lam / T * torch.floor((z * T + lam / 2) / lam).clamp(-b, b)
    assert torch.allclose(total / T, expected, atol=1e-5)


# -- the generalized threshold iteration ------------------------------------------------------------

def brute_force_theta(mu: float, sigma: float, N: int, a: int, b: int) -> float:
    f = lambda th: generalized_quantisation_error(th, mu, sigma, N, a, b)  # noqa: E731
    grid = [10 ** (k / 100) for k in range(-400, 200)]
    start = min(grid, key=f)
    return minimize_scalar(f, bounds=(start / 1.03, start * 1.03), method="bounded", options={"xatol": 1e-12}).x


@pytest.mark.parametrize("N,a,b", [(4, 0, 60), (4, -60, 60), (2, 0, 6), (4, -4, 4), (8, 0, 2040), (8, -2040, 2040)])
@pytest.mark.parametrize("mu,sigma", [(0.0, 1.0), (-1.0, 0.7), (0.5, 0.2), (2.0, 1.0)])
def test_generalized_iteration_minimises_the_quantisation_error(N, a, b, mu, sigma):
    theta = generalized_threshold_iteration(torch.tensor([mu]), torch.tensor([sigma**2]), N, a, b, "converged").item()
    best = brute_force_theta(mu, sigma, N, a, b)
    assert theta == pytest.approx(best, rel=1e-4)
    assert generalized_quantisation_error(theta, mu, sigma, N, a, b) <= \
        generalized_quantisation_error(best, mu, sigma, N, a, b) * (1 + 1e-7)


def test_generalized_iteration_with_levels_0_to_N_is_the_dcgs_iteration():
    mean, var = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([0.5, 0.49, 1.0])
    for N in (16, 1024):
        for mode in ("official", "converged"):
            kwargs = {} if mode == "converged" else {"steps": 100}
            ours = generalized_threshold_iteration(mean, var, N, 0, N, mode, **kwargs)
            dcgs = threshold_iteration(mean, var, N, mode)
            assert torch.allclose(ours, dcgs, rtol=1e-4), (N, mode, ours, dcgs)


def test_one_update_is_the_best_rescaling_of_the_levels():
    """Lemma 4.4: k1 = argmin_k QE1(θ, k): rescaling the levels by k1 does no worse than k1·(1 ± 1%)."""
    from snnbench.methods.snn.generalized_thresholds import generalized_iteration_update

    import numpy as np
    from scipy.integrate import quad
    from scipy.stats import norm

    mu, sigma, N, a, b, theta = 0.2, 0.8, 3, -9, 9, 1.3
    k1 = float(generalized_iteration_update(torch.tensor(theta, dtype=torch.float64), torch.tensor(mu, dtype=torch.float64),
                                            torch.tensor(sigma, dtype=torch.float64), N, a, b)) / theta

    def qe1(k: float) -> float:
        f = lambda x: (k * theta / N * np.clip(np.floor(N * x / theta + 0.5), a, b) - x) ** 2 * norm.pdf(x, mu, sigma)  # noqa: E731
        edges = [(2 * i - 1) * theta / (2 * N) for i in range(a + 1, b + 1)]
        return quad(f, mu - 12 * sigma, mu + 12 * sigma, points=edges, limit=400)[0]

    assert qe1(k1) < qe1(k1 * 1.01) and qe1(k1) < qe1(k1 * 0.99)


def test_generalized_iteration_rejects_bad_level_ranges():
    with pytest.raises(ValueError, match="a <= 0 <= b"):
        generalized_threshold_iteration(torch.zeros(1), torch.ones(1), 4, 1, 8)
    with pytest.raises(ValueError, match="N >= 1"):
        generalized_threshold_iteration(torch.zeros(1), torch.ones(1), 0, 0, 8)


def test_engine_methods_take_the_generalized_rule():
    """threshold=hmt_iteration on DCGS's MT neurons: each ReLU site's θ is Eq. 29 with levels 0..T·2^n."""
    from snnbench.methods.dcgs import DCGS
    from snnbench.methods.snn.neurons import SpikingNeuron

    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.randn(4, 1, 6, 6)
    ctx = ConversionContext(T=2, example=x)
    method = DCGS({"threshold": "hmt_iteration", "iteration_mode": "converged", "n": 2})
    kind, = method.stat_kinds(model, ctx)
    stats = collect_stats(model, [x], (kind,))
    snn = method.convert(model, stats, ctx)
    neurons = [m for m in snn.modules() if isinstance(m, SpikingNeuron)]
    sites = method.graph(model, x).sites
    assert len(neurons) == len(sites) == 2
    for site, neuron in zip(sites, neurons):
        values = stats.site(kind, site.name)
        expected = generalized_threshold_iteration(values["mean"], values["var"], 8, 0, 8, "converged").clamp_min(0)
        assert torch.equal(neuron.theta, expected)


# -- conversion --------------------------------------------------------------------------------------

#: the H-MT ladder costs about 2.5x a DCGS step in eager mode; the zoo models cover the layer kinds
#: by default, the torchvision graphs run with -m slow
HMT_DEFAULT_ARCHITECTURES = {"vgg_small", "resnet_small"}


@pytest.mark.parametrize("arch", [a if a in HMT_DEFAULT_ARCHITECTURES else pytest.param(a, marks=pytest.mark.slow)
                                  for a in ARCHITECTURES])
def test_hmt_output_converges_to_relu_network_as_T_grows(arch):
    build, shape = ARCHITECTURES[arch]
    model = build()
    torch.manual_seed(1)
    x = torch.randn(shape)
    err = relative_errors(model, x, HMT({"threshold": "max", "n": 4}))
    assert err[64] < 0.5 * err[4], err


def test_hmt_neuron_converges_to_identity_as_T_grows():
    """Full H-MT neurons at signed (y = x) sites: a transformer graph with neurons in front of its layers."""
    torch.manual_seed(0)
    from test_conversion import zoo_model

    model = zoo_model("vit_mini")
    x = torch.randn(2, 1, 28, 28)
    err = relative_errors(model, x, HMT({"threshold": "max", "n": 4, "placement": "inputs"}))
    assert err[64] < 0.5 * err[4], err


def test_hmt_with_the_generalized_rule_tracks_the_ann():
    from test_conversion import zoo_model

    model = zoo_model("resnet_small")
    torch.manual_seed(2)
    x = torch.randn(8, 1, 28, 28)
    err = relative_errors(model, x, HMT({"n": 4}), steps=(1, 16))
    assert err[16] < err[1] and err[16] < 0.2, err


# -- counting and fairness ---------------------------------------------------------------------------

class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 2, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 4)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def test_counter_charges_every_sub_spike_the_full_fan_out():
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.randn(2, 1, 6, 6)
    method = HMT({"threshold": "max", "n": 3})
    ctx = ConversionContext(T=3, example=x)
    snn = method.convert(model, collect_stats(model, [x], method.stat_kinds(model, ctx)), ctx)
    neurons = [m for m in snn.modules() if isinstance(m, HarmonyNeuron)]
    # independent count: record every neuron's outputs, recount sub-spikes as popcount(out / λ_min)
    records: dict[int, list[torch.Tensor]] = {id(m): [] for m in neurons}
    hooks = [m.register_forward_hook(lambda mod, a, out: records[id(mod)].append(out.detach().clone()))
             for m in neurons]
    T = 3
    with OpCounter(snn, T) as counter, torch.inference_mode():
        snn.reset()
        for _ in snn.simulate(x, T):
            pass
        counter.add_samples(len(x))
    for h in hooks:
        h.remove()
    summary = counter.summary()

    def popcount(out: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        k = torch.round(out / lam).to(torch.int64)
        return sum((k >> i) & 1 for i in range(3))

    n1, n2 = neurons
    subs1 = [popcount(o, n1.lambda_min) for o in records[id(n1)]]
    subs2 = [popcount(o, n2.lambda_min) for o in records[id(n2)]]
    events = sum(int(s.sum()) for s in subs1 + subs2)
    assert summary.events[-1] * len(x) == pytest.approx(events)
    units = sum(float((o / n1.lambda_min).sum()) for o in records[id(n1)]) + \
        sum(float((o / n2.lambda_min).sum()) for o in records[id(n2)])
    assert summary.unit_spikes[-1] * len(x) == pytest.approx(units, rel=1e-6)
    # conv2 (3x3, padding 1, 2 output channels): fan-out of each input element = covered outputs x 2
    fan = torch.nn.grad.conv2d_input((1, 1, 6, 6), torch.ones(1, 1, 3, 3), torch.ones(1, 1, 6, 6), padding=1)[0, 0]
    conv2_ops = sum(float((s.sum(dim=(0, 1)) * fan).sum()) * 2 for s in subs1)
    # fc after a global average pool: every sub-spike of the 2 channels reaches 4 outputs
    fc_ops = sum(float(s.sum()) * 4 for s in subs2)
    # conv1 reads the analog image (MACs), conv2 and fc read sub-spikes (ACs)
    assert summary.acs[-1] * len(x) == pytest.approx(conv2_ops + fc_ops)


def test_fairness_figures_of_hmt():
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.randn(2, 1, 6, 6)
    for n in (4, 8):
        method = HMT({"threshold": "max", "n": n})
        ctx = ConversionContext(T=2, example=x)
        snn = method.convert(model, collect_stats(model, [x], method.stat_kinds(model, ctx)), ctx)
        fair = snn.fairness()
        assert fair.frames_before_readout == 0
        assert fair.levels_per_step == pytest.approx(n)      # 2^n output values of a Pos neuron
        assert fair.max_spikes_per_step == 2**n - 1          # units of λ_min
        assert snn.describe()["max_subspikes_per_step"] == n


def test_hmt_settings_are_validated():
    from snnbench.methods.settings import SettingsError

    with pytest.raises(SettingsError):
        HMT({"n": 0})
    with pytest.raises(SettingsError):
        HMT({"threshold": "grid"})


def test_hmt_energy_convention_prices_every_snn_op_as_an_accumulate():
    from snnbench.energy import ENERGY_MODELS, HOROWITZ_45NM

    hmt = ENERGY_MODELS["hmt-aaai26-eq31"]
    acs, macs, dense = 1200.0, 300.0, 1000.0
    assert hmt.ratio(acs, macs, dense) == pytest.approx((acs + macs) * 0.9 / (dense * 4.6))
    assert hmt.ratio(acs, macs, dense) == pytest.approx(HOROWITZ_45NM.ratio(acs + macs, 0.0, dense))  # all-AC
    assert HOROWITZ_45NM.ratio(acs, macs, dense) == pytest.approx((acs * 0.9 + macs * 4.6) / (dense * 4.6))
