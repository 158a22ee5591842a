"""The ``calibration`` method (SNN Calibration): grid-searched thresholds, bias and potential
correction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snnbench.methods.base import ConversionContext
from snnbench.methods.calibration import SNNCalibration
from snnbench.methods.calibration.correction import (ann_activations, calibrate_network, calibrate_network_reference,
                                               mean_rate)
from snnbench.methods.settings import SettingsError
from snnbench.methods.snn.neurons import SpikingNeuron
from snnbench.methods.snn.stats import StatKind, collect_stats


def build(model, batch, T, **settings):
    method = SNNCalibration(settings)
    ctx = ConversionContext(T=T, example=batch, calib_batches=lambda: iter([batch]))
    stats = collect_stats(model, [batch], method.stat_kinds(model, ctx))
    return method, stats, ctx


def site_errors(snn, graph, unit_paths, batch, T):
    """Mean |E_{N,H,W}[SNN/T] - E_{N,H,W}[ANN]| per site: the error bias correction targets."""
    targets = ann_activations(graph, batch)
    out = {}
    for site in graph.sites:
        neuron = snn.net.get_submodule(unit_paths[site.name])
        rate = mean_rate(snn, neuron, batch, T)
        dims = tuple(d for d in range(rate.ndim) if d != 1)
        out[site.name] = float((rate.mean(dims) - targets[site.name].mean(dims)).abs().mean())
    return out


@pytest.fixture(scope="module")
def digits_batch(digits_task, digits_vgg):
    return next(digits_task.calib_batches(60, 60, seed=0, bundle=digits_vgg))


def test_defaults_are_the_papers_recipe():
    s = SNNCalibration().settings
    assert (s.neuron, s.coding, s.threshold, s.granularity, s.mode) == ("if", "rate", "grid", "layer", "light")
    with pytest.raises(SettingsError, match="rate coding"):
        SNNCalibration({"coding": "differential"})
    with pytest.raises(SettingsError, match="grid_step"):
        SNNCalibration({"grid_points": 200, "grid_step": 0.01})


def test_grid_thresholds_use_the_runs_T_and_the_grid_settings(digits_vgg, digits_batch):
    method, stats, ctx = build(digits_vgg.core, digits_batch, T=16, grid_points=10, grid_step=0.05)
    (kind,) = method.stat_kinds(digits_vgg.core, ctx)
    assert kind == StatKind("mse_grid", granularity="layer", levels=16, grid_points=10, grid_step=0.05)
    theta = stats.site(kind, "features.2")["value"].item()
    top = collect_stats(digits_vgg.core, [digits_batch], [StatKind("max")]).site(StatKind("max"), "features.2")
    ratios = {round(1 - 0.05 * i, 2) for i in range(10)}
    assert round(theta / top["value"].item(), 2) in ratios


def test_bias_correction_reduces_the_error_it_targets(digits_vgg, digits_batch):
    T = 8
    method, stats, ctx = build(digits_vgg.core, digits_batch, T, mode="grid")
    snn, graph, paths = method.build(digits_vgg.core, stats, ctx)
    before = site_errors(snn, graph, paths, digits_batch, T)
    corrected = SNNCalibration({"mode": "light"}).convert(digits_vgg.core, stats, ctx)
    _, graph2, paths2 = method.build(digits_vgg.core, stats, ctx)  # same graph and paths
    after = site_errors(corrected, graph2, paths2, digits_batch, T)
    assert sum(after.values()) < 0.5 * sum(before.values()), (before, after)
    biases = [m.input_bias for m in corrected.modules() if isinstance(m, SpikingNeuron)]
    assert all(b is not None and b.shape == (1, b.shape[1], 1, 1) or b.ndim == 2 for b in biases)


def test_potential_correction_sets_a_per_neuron_initial_potential(digits_vgg, digits_batch):
    method, stats, ctx = build(digits_vgg.core, digits_batch, T=8, mode="potential")
    snn = method.convert(digits_vgg.core, stats, ctx)
    neurons = [m for m in snn.modules() if isinstance(m, SpikingNeuron)]
    first = neurons[0]
    assert first.v_init is not None and first.v_init.shape == (1, 16, 8, 8)
    assert not torch.allclose(first.v_init, (first.theta / 2).expand_as(first.v_init))


@pytest.mark.parametrize("mode", ["grid", "light", "potential"])
def test_calibrated_snn_approaches_the_ann_as_T_grows(digits_vgg, digits_batch, mode):
    model = digits_vgg.core
    errors = {}
    for T in (4, 32):
        method, stats, ctx = build(model, digits_batch, T, mode=mode)
        snn = method.convert(model, stats, ctx)
        with torch.inference_mode():
            ref = model(digits_batch)
            snn.reset()
            out = list(snn.simulate(digits_batch, T))[-1]
        errors[T] = float((out - ref).norm() / ref.norm())
    assert errors[32] < 0.6 * errors[4], errors


@pytest.mark.parametrize("mode", ["light", pytest.param("potential", marks=pytest.mark.slow)])
def test_corrections_work_on_a_transformer_with_signed_input_sites(mode):
    """Transformer placement puts signed neurons (no ReLU floor) in front of linear layers;
    the ANN value those neurons stand for is the identity, and the corrections apply."""
    from snnbench.tasks.zoo import get_model_spec

    torch.manual_seed(0)
    spec = get_model_spec("vit_mini")
    model = spec.build(spec, in_shape=(1, 28, 28), num_classes=10).eval()
    batch = torch.randn(8, 1, 28, 28)
    method, stats, ctx = build(model, batch, 8, mode=mode)
    snn, graph, _ = method.build(model, stats, ctx)
    assert graph.placement == "inputs" and any(site.floor is None for site in graph.sites)
    targets = ann_activations(graph, batch)
    signed = next(site for site in graph.sites if site.floor is None)
    assert (targets[signed.name] < 0).any()  # not clamped to a ReLU range
    corrected = method.convert(model, stats, ctx)
    with torch.inference_mode():
        corrected.reset()
        out = list(corrected.simulate(batch, 8))[-1]
    assert torch.isfinite(out).all() and out.shape == model(batch).shape


class _Residual(nn.Module):
    """conv-ReLU-conv with a skip connection: a value (the block input) crosses the cut at
    the inner ReLU, so the segmented pass must carry it over."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.relu0 = nn.ReLU()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        h = self.relu0(self.stem(x))
        y = self.relu2(self.conv2(self.relu1(self.conv1(h))) + h)
        return self.fc(y.flatten(1))


def _corrections(snn):
    return [(m.input_bias, m.v_init) for m in snn.modules() if isinstance(m, SpikingNeuron)]


def _assert_same_corrections(a, b):
    pairs = list(zip(_corrections(a), _corrections(b)))
    assert pairs and len(_corrections(a)) == len(_corrections(b))
    for (bias_a, v_a), (bias_b, v_b) in pairs:
        for x, y in ((bias_a, bias_b), (v_a, v_b)):
            assert (x is None) == (y is None)
            if x is not None:
                assert torch.equal(x, y)


def _both_paths(model, batch, T, mode, **kwargs):
    method, stats, ctx = build(model, batch, T, mode="grid")
    ref, graph, paths = method.build(model, stats, ctx)
    new, _, _ = method.build(model, stats, ctx)
    report_ref = calibrate_network_reference(ref, graph, paths, batch, T, mode)
    report_new = calibrate_network(new, graph, paths, batch, T, mode, **kwargs)
    return ref, new, report_ref, report_new


@pytest.mark.parametrize("mode", ["bias", "potential"])
@pytest.mark.parametrize("budget", [None, 0])
def test_segmented_correction_equals_the_whole_network_reference_on_cnns(digits_vgg, digits_batch, mode, budget):
    """Each segment simulated once (budget None), or re-run from the input when the cut's
    values exceed the memory budget (0): the same corrections, bit for bit, as one whole
    T-step simulation per site."""
    kwargs = {} if budget is None else {"max_cached_bytes": budget}
    torch.manual_seed(0)
    residual = _Residual().eval()
    for model, batch in ((digits_vgg.core, digits_batch[:24]), (residual, torch.randn(16, 1, 8, 8))):
        ref, new, report_ref, report_new = _both_paths(model, batch, 6, mode, **kwargs)
        assert report_ref == report_new and len(report_new) >= 3
        _assert_same_corrections(ref, new)
        assert any(b is not None and bool(b.abs().sum() > 0) for pair in _corrections(new) for b in pair)


def test_segmented_correction_equals_the_reference_on_a_transformer():
    """vit_mini (34 signed input sites, products, graded units with state): identical too."""
    from snnbench.tasks.zoo import get_model_spec

    torch.manual_seed(0)
    spec = get_model_spec("vit_mini")
    model = spec.build(spec, in_shape=(1, 28, 28), num_classes=10).eval()
    batch = torch.randn(4, 1, 28, 28)
    ref, new, report_ref, report_new = _both_paths(model, batch, 3, "bias")
    assert report_ref == report_new and len(report_new) > 30
    _assert_same_corrections(ref, new)


def test_a_cell_traces_its_network_once(digits_vgg):
    """The ANN reference, the statistic kinds, the statistics pass and the conversion share
    one traced graph (it used to be built four times per cell)."""
    from snnbench.cell import CellSpec
    from snnbench.methods.snn import graph as graph_module
    from snnbench.runner import run_cell

    before = graph_module.GRAPH_BUILDS["count"]
    result = run_cell(CellSpec(method="calibration", task="digits", model="vgg_small", T=4, calib_size=100,
                               eval_size=50))
    assert result["status"] == "ok", result["error"]
    assert graph_module.GRAPH_BUILDS["count"] == before + 1
