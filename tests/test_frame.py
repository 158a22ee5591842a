"""The compiled network frame (methods/snn/frame.py): bit-identical to the per-unit path at every
t, unit states included; one compilation for a whole run; steps aside under the op counter, for
units without a functional step and when compilation fails."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from snnbench.counting import OpCounter
from snnbench.methods.base import ConversionContext
from snnbench.methods.dcgs import DCGS
from snnbench.methods.snn import frame as frame_mod
from snnbench.methods.snn.graded import GradedUnit
from snnbench.methods.snn.neurons import SpikingNeuron
from snnbench.methods.snn.stats import collect_stats
from snnbench.methods.snn.units import StatefulUnit
from snnbench.tasks.zoo.architectures import vit_mini

T = 8


class ResidualCNN(nn.Module):
    """conv-BN-ReLU, a residual block, max and average pooling, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                   nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.relu(x + self.block(x))
        return self.head(self.pool(x))


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = ResidualCNN()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def small_vit() -> nn.Module:
    """vit_mini's architecture (timm ViT: LayerNorm, attention softmax, GELU MLP), depth 1."""
    torch.manual_seed(0)
    return vit_mini((1, 28, 28), 10, embed_dim=32, depth=1, num_heads=2).eval()


MODELS = {"cnn": small_cnn, "vit": small_vit}


def convert(model: nn.Module, x: torch.Tensor, coding: str, **settings):
    method = DCGS({"coding": coding, "fuse": False, **settings})
    ctx = ConversionContext(T=T, example=x)
    return method.convert(model, collect_stats(model, [x], method.stat_kinds(model, ctx)), ctx)


def run(snn, x: torch.Tensor) -> tuple[list[torch.Tensor], list[tuple[torch.Tensor, ...]]]:
    """Every estimate of a T-step simulation, and every unit's state after it."""
    with torch.inference_mode():
        snn.reset()
        outs = [o.clone() for o in snn.simulate(x, T)]
    units = [m for m in snn.net.modules() if isinstance(m, StatefulUnit)]
    return outs, [u.frame_state() for u in units]


@pytest.mark.parametrize("arch,coding", [
    ("cnn", "differential"),
    pytest.param("cnn", "rate", marks=pytest.mark.slow),
    pytest.param("vit", "differential", marks=pytest.mark.slow),
    pytest.param("vit", "rate", marks=pytest.mark.slow),
])
def test_compiled_frame_equals_per_unit_path_bit_for_bit(arch, coding):
    model = MODELS[arch]()
    torch.manual_seed(1)
    x = torch.randn(3, 1, 28, 28)
    reference = convert(model, x, coding, compile_frame=False)
    compiled = convert(model, x, coding, compile_frame=True)
    assert compiled.compile_frame and not reference.compile_frame and compiled.frame_obstacle is None
    ref_out, ref_state = run(reference, x)
    out, state = run(compiled, x)
    runner = compiled.frame_runner()
    # the frame path ran, compiled once for the whole run (t is a tensor input: no per-t recompile)
    assert len(runner._compiled) == 1 and runner.compiled_variants() == 1 and not runner.failed
    assert len(out) == T
    for t, (a, b) in enumerate(zip(ref_out, out), 1):
        assert torch.equal(a, b), (t, float((a - b).abs().max()))
    assert len(state) == len(ref_state) > 0
    for a, b in zip(ref_state, state):
        assert len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b))
    units = [m for m in compiled.net.modules() if isinstance(m, StatefulUnit)]
    assert {u.t for u in units} == {T + 1 if coding == "differential" else T}
    if arch == "vit":
        assert any(isinstance(u, GradedUnit) for u in units)
    if arch != "cnn" or coding != "rate":
        return  # the default run compiles once (~20 s on 2 busy cores); shapes are checked with -m slow
    # a second batch of the same shape reuses the compiled frame; a new shape compiles its own copy
    run(compiled, x * 0.5)
    assert runner.compiled_variants() == 1
    out2, _ = run(compiled, x[:2])
    out2_ref, _ = run(reference, x[:2])
    assert all(torch.equal(a, b) for a, b in zip(out2, out2_ref))
    assert len(runner._compiled) == 2 and runner.compiled_variants() == 2


def test_op_counter_keeps_the_per_unit_path_with_equal_counts(monkeypatch):
    model = small_cnn()
    torch.manual_seed(1)
    x = torch.randn(2, 1, 28, 28)
    summaries = []
    for compile_frame in (False, True):
        snn = convert(model, x, "differential", compile_frame=compile_frame)
        calls = []
        monkeypatch.setattr(frame_mod.FrameRunner, "__call__", lambda self, frame: calls.append(1))
        with torch.inference_mode(), OpCounter(snn, T) as counter:
            snn.reset()
            outs = [o.clone() for o in snn.simulate(x, T)]
            counter.add_samples(x.shape[0])
        assert calls == []  # observed: the frame path was not even asked
        summaries.append((outs, counter.summary()))
    (ref_out, ref_sum), (out, summary) = summaries
    assert all(torch.equal(a, b) for a, b in zip(ref_out, out))
    assert summary == ref_sum


def test_hooks_and_counting_units_count_as_observed():
    model = small_cnn()
    x = torch.randn(2, 1, 28, 28)
    snn = convert(model, x, "rate", compile_frame=True)
    assert not frame_mod.observed(snn.net)
    neuron = next(m for m in snn.net.modules() if isinstance(m, SpikingNeuron))
    handle = neuron.register_forward_hook(lambda *a: None)
    assert frame_mod.observed(snn.net)
    handle.remove()
    neuron.count_spikes = True
    assert frame_mod.observed(snn.net)


class PlainSubclassNeuron(SpikingNeuron):
    """A neuron class other than the engine's (its step may differ): no functional frame."""


def test_a_unit_without_functional_step_keeps_the_per_unit_path(monkeypatch):
    model = small_cnn()
    torch.manual_seed(1)
    x = torch.randn(2, 1, 28, 28)
    snn = convert(model, x, "differential", compile_frame=True)
    name, neuron = next((n, m) for n, m in snn.net.named_modules() if isinstance(m, SpikingNeuron))
    other = PlainSubclassNeuron(neuron.theta, rule=neuron.rule, n=neuron.n, coding=neuron.coding,
                                signed=neuron.signed, floor=neuron.floor, ceiling=neuron.ceiling)
    snn.net.get_submodule(name.rpartition(".")[0] or "").register_module(name.rpartition(".")[2], other)
    assert "PlainSubclassNeuron" in snn.frame_obstacle and snn.frame_runner() is None
    compiles = []
    monkeypatch.setattr(torch, "compile", lambda *a, **k: compiles.append(1))
    out, _ = run(snn, x)
    assert len(out) == T and compiles == []


def test_a_failing_compilation_falls_back_to_the_per_unit_path_with_one_warning(monkeypatch, caplog):
    model = small_cnn()
    torch.manual_seed(1)
    x = torch.randn(2, 1, 28, 28)
    reference = run(convert(model, x, "differential", compile_frame=False), x)[0]
    snn = convert(model, x, "differential", compile_frame=True)

    def broken(self, key, module):
        def fail(*args):
            raise RuntimeError("no compiler here")
        return fail

    monkeypatch.setattr(frame_mod.FrameRunner, "_compiled_frame", broken)
    with caplog.at_level(logging.WARNING, logger="snnbench.methods.snn.frame"):
        out = run(snn, x)[0]
        out_again = run(snn, x)[0]
    warnings = [r for r in caplog.records if "network frame failed" in r.getMessage()]
    assert len(warnings) == 1 and snn.frame_runner().failed
    assert all(torch.equal(a, b) for a, b in zip(reference, out))
    assert all(torch.equal(a, b) for a, b in zip(reference, out_again))


def test_compile_frame_is_opt_in():
    """Off by default whatever ``fuse`` is (a compile per input shape for ~20 %, BENCHMARKS.md §8)."""
    assert DCGS({"fuse": True}).compile_frame() is False
    assert DCGS({}).compile_frame() is False
    assert DCGS({"fuse": False, "compile_frame": True}).compile_frame() is True
    assert DCGS({"fuse": True, "compile_frame": True}).compile_frame() is True


def test_the_functional_frame_module_runs_eagerly_to_the_same_result():
    """The rewritten graph itself (no compiler involved) steps like the per-unit path."""
    model = small_vit()
    torch.manual_seed(1)
    x = torch.randn(2, 1, 28, 28)
    reference = run(convert(model, x, "differential", compile_frame=False), x)[0]
    snn = convert(model, x, "differential", compile_frame=True)

    def eager(self, key, module):
        return module

    import unittest.mock

    with unittest.mock.patch.object(frame_mod.FrameRunner, "_compiled_frame", eager):
        out = run(snn, x)[0]
    assert all(torch.equal(a, b) for a, b in zip(reference, out))
    gm = snn.frame_runner()._module
    opaque = [m for m in gm.modules() if isinstance(m, frame_mod._OpaqueCall)]
    steps = [m for m in gm.modules() if isinstance(m, frame_mod._UnitStep)]
    # every graded unit's function and every ANN layer go in as opaque calls of eager's kernels
    assert steps and all(s.fn is not None for s in steps if isinstance(s.unit, GradedUnit))
    assert any(isinstance(o.fn, nn.Linear) for o in opaque)
