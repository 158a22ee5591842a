"""The decoded SNN output approaches the ANN output as T grows, for every architecture of the
engine issue and both codings; trained models keep their accuracy."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision

from snnbench.cell import CellSpec
from snnbench.runner import run_cell
from snnbench.methods.base import ConversionContext
from snnbench.methods.dcgs import DCGS
from snnbench.methods.rate import RateCoding
from snnbench.methods.snn.stats import collect_stats
from snnbench.tasks.zoo import get_model_spec


def relative_errors(model, x, method, steps=(4, 64)):
    """‖SNN_t - ANN‖ / ‖ANN‖ at the given t (thresholds from the batch itself)."""
    ctx = ConversionContext(T=max(steps), example=x)
    stats = collect_stats(model, [x], method.stat_kinds(model, ctx))
    snn = method.convert(model, stats, ctx)
    with torch.inference_mode():
        ref = model(x)
        snn.reset()
        return {t: float((out - ref).norm() / ref.norm()) for t, out in enumerate(snn.simulate(x, max(steps)), 1)
                if t in steps}


def torchvision_model(name):
    torch.manual_seed(0)
    return getattr(torchvision.models, name)().eval()


def zoo_model(name, shape=(1, 28, 28)):
    torch.manual_seed(0)
    spec = get_model_spec(name)
    return spec.build(spec, in_shape=shape, num_classes=10).eval()


ARCHITECTURES = {
    "vgg_small": (lambda: zoo_model("vgg_small"), (4, 1, 28, 28)),
    "resnet_small": (lambda: zoo_model("resnet_small"), (4, 1, 28, 28)),
    "resnet18": (lambda: torchvision_model("resnet18"), (2, 3, 32, 32)),
    "resnet34": (lambda: torchvision_model("resnet34"), (2, 3, 32, 32)),
    "resnet50": (lambda: torchvision_model("resnet50"), (2, 3, 32, 32)),
    "vgg16_bn": (lambda: torchvision_model("vgg16_bn"), (1, 3, 32, 32)),
    "mobilenet_v2": (lambda: torchvision_model("mobilenet_v2"), (2, 3, 32, 32)),
}


#: the largest graphs (the same layer kinds as resnet18/34 and mobilenet_v2) run with -m slow
HEAVY_ARCHITECTURES = {"resnet50", "vgg16_bn"}


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in HEAVY_ARCHITECTURES else a
                                  for a in ARCHITECTURES])
@pytest.mark.parametrize("coding", ["differential", "rate"])
def test_snn_output_converges_to_ann(arch, coding):
    build, shape = ARCHITECTURES[arch]
    model = build()
    torch.manual_seed(1)
    x = torch.randn(shape)
    # thresholds from the batch maximum, so no value is clipped and the error can vanish
    method = DCGS({"threshold": "max"}) if coding == "differential" else RateCoding({"threshold": "max"})
    err = relative_errors(model, x, method)
    if coding == "differential":
        assert err[64] < 0.01 and err[64] < 0.1 * err[4], err
    else:
        assert err[64] < 0.5 * err[4], err


def test_rate_and_differential_with_mt_and_if_neurons_all_converge():
    model = torchvision_model("resnet18")
    x = torch.randn(2, 3, 32, 32)
    for settings in ({"coding": "rate", "neuron": "mt", "n": 4}, {"coding": "differential", "neuron": "if"}):
        err = relative_errors(model, x, DCGS({"threshold": "max", **settings}))
        assert err[64] < 0.5 * err[4], (settings, err)


@pytest.mark.parametrize("model", ["vgg_small", "resnet_small"])
def test_trained_digits_models_keep_accuracy(model, digits_vgg, digits_resnet):
    dcgs = run_cell(CellSpec(method="dcgs", task="digits", model=model, T=8, calib_size=500))
    assert dcgs["status"] == "ok", dcgs["error"]
    ann = dcgs["ann"]
    assert dcgs["per_t"]["4"]["metric"] >= ann - 0.01
    assert 0 < dcgs["per_t"]["8"]["energy_ratio"] < 2
    rate = run_cell(CellSpec(method="rate", task="digits", model=model, T=64, calib_size=500))
    acc = {t: rate["per_t"][str(t)]["metric"] for t in (2, 64)}
    assert acc[64] > acc[2] and acc[64] >= ann - 0.02
    # cumulative counts grow with t
    spikes = [rate["per_t"][str(t)]["spikes_per_sample"] for t in (1, 8, 64)]
    assert spikes[0] < spikes[1] < spikes[2]


def test_every_setting_changes_the_converted_snn():
    """Each engine setting reaches the SNN (STYLE §5): changing it changes the outputs."""
    model = zoo_model("vgg_small")
    torch.manual_seed(2)
    x = torch.randn(8, 1, 28, 28)
    base = {"threshold": "percentile", "granularity": "channel", "coding": "differential"}

    def outputs(**change):
        method = DCGS({**base, **change})
        ctx = ConversionContext(T=6, example=x)
        stats = collect_stats(model, [x], method.stat_kinds(model, ctx))
        snn = method.convert(model, stats, ctx)
        with torch.inference_mode():
            snn.reset()
            return torch.stack(list(snn.simulate(x, 6)))

    reference = outputs()
    changes = {"neuron": "if", "n": 3, "coding": "rate", "threshold": "max", "percentile": 90.0,
               "percentile_scope": "nonzero", "granularity": "layer", "threshold_scale": 2.0, "placement": "inputs"}
    fields = {f.name for f in dataclasses.fields(DCGS.settings_cls)}
    # equal-output paths and the peer conventions (each changes the SNN in test_peer_conventions.py)
    assert fields == set(changes) | {"iteration_mode", "fuse", "compile_frame", "kernel", "if_v_init", "if_negative",
                                     "input_percentile_of"}
    for key, value in changes.items():
        assert not torch.equal(outputs(**{key: value}), reference), key
    assert torch.equal(outputs(threshold="auto", iteration_mode="official"),
                       outputs(threshold="iteration", iteration_mode="official"))  # auto = iteration on CNNs
    it_official = outputs(threshold="iteration", iteration_mode="official")
    it_converged = outputs(threshold="iteration", iteration_mode="converged")
    assert not torch.equal(it_official, it_converged)


@pytest.mark.parametrize("name,coding", [
    ("vgg_small", "differential"),
    pytest.param("vgg_small", "rate", marks=pytest.mark.slow),
    # signed neurons on permuted, non-contiguous q/k/v views
    pytest.param("vit_mini", "differential", marks=pytest.mark.slow),
])
def test_fused_neuron_steps_equal_eager_steps(name, coding):
    """fuse=true (torch.compile) gives the same spikes, states and outputs as the eager path."""
    model = zoo_model(name)
    torch.manual_seed(3)
    x = torch.randn(8, 1, 28, 28)
    outputs = {}
    for fuse in (False, True):
        method = DCGS({"coding": coding, "threshold": "percentile", "fuse": fuse})
        ctx = ConversionContext(T=6, example=x)
        snn = method.convert(model, collect_stats(model, [x], method.stat_kinds(model, ctx)), ctx)
        with torch.inference_mode():
            snn.reset()
            outputs[fuse] = torch.stack(list(snn.simulate(x, 6)))
    assert torch.equal(outputs[False], outputs[True])


def test_fuse_auto_follows_the_environment_and_explicit_values_win(monkeypatch):
    from snnbench.methods.snn.fused import FUSE_ENV, resolve_fuse

    monkeypatch.setenv(FUSE_ENV, "0")
    assert resolve_fuse(None) is False and resolve_fuse(True) is True
    monkeypatch.setenv(FUSE_ENV, "1")
    assert resolve_fuse(None) is True and resolve_fuse(False) is False
    monkeypatch.delenv(FUSE_ENV)
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("CXX", "no-such-compiler")
    assert resolve_fuse(None) is False  # no C++ compiler: inductor cannot build CPU kernels
    assert DCGS({"fuse": "auto"}).settings.fuse is None and DCGS({"fuse": ""}).settings.fuse is None


def test_a_failing_compilation_falls_back_to_identical_eager_steps(monkeypatch, caplog):
    """fuse=true without a working toolchain: one warning, then the eager step (same spikes)."""
    from snnbench.methods.snn import fused

    calls = []

    def broken(signature):
        def fail(*args):
            calls.append(signature)
            raise RuntimeError("InductorError: no C++ compiler")
        return fail

    monkeypatch.setattr(fused, "compiled", broken)
    monkeypatch.setattr(fused, "_FAILED", set())
    model = zoo_model("vgg_small")
    torch.manual_seed(4)
    x = torch.randn(4, 1, 28, 28)
    outputs = {}
    for fuse in (False, True):
        method = DCGS({"threshold": "percentile", "fuse": fuse})
        ctx = ConversionContext(T=3, example=x)
        snn = method.convert(model, collect_stats(model, [x], method.stat_kinds(model, ctx)), ctx)
        with torch.inference_mode(), caplog.at_level("WARNING", logger="snnbench.methods.snn.fused"):
            snn.reset()
            outputs[fuse] = torch.stack(list(snn.simulate(x, 3)))
    assert torch.equal(outputs[False], outputs[True])
    # each step signature is tried once, then runs eagerly for every later step and layer
    assert len(calls) == len(set(calls)) >= 1 and {c.coding for c in calls} == {"differential"}
    warnings = [r for r in caplog.records if "running it eagerly" in r.message]
    assert len(warnings) == len(calls)
