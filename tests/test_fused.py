"""The fused (torch.compile) neuron steps: one compilation per step signature, shared by
layers of every shape, never a recompile-limit fallback, same results as eager."""

from __future__ import annotations

import logging

import pytest
import torch

from snnbench.methods.snn import fused
from snnbench.methods.snn.neurons import SpikingNeuron

#: shapes of a conv net, a transformer and a detector's small FPN levels (1x1, 2x2, 1x2),
#: a batch of one, and more layers than dynamo's recompile limit (8)
SHAPES = [(4, 8, 16, 16), (4, 8, 1, 1), (4, 8, 2, 2), (1, 16, 8, 8), (4, 16, 1, 2), (4, 32, 4, 4), (2, 10),
          (4, 5, 7), (4, 8, 3, 3), (3, 8, 5, 5), (2, 3, 1, 1, 4)]


@pytest.fixture(autouse=True)
def inductor_steps(monkeypatch):
    """These are the inductor steps: the native loops, which one torch thread would take, have
    their own tests (test_native_steps.py), so a one-core machine runs these too."""
    monkeypatch.setenv("SNNBENCH_NATIVE", "0")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def torch_warnings():
    """Warnings logged by torch (dynamo's recompile-limit message) and by the fused module."""
    handler = _Records()
    loggers = [logging.getLogger("torch"), logging.getLogger("torch._dynamo"), logging.getLogger(fused.__name__)]
    for lg in loggers:
        lg.addHandler(handler)
    yield handler.messages
    for lg in loggers:
        lg.removeHandler(handler)


def _neuron(shape, fuse: bool, ceiling) -> SpikingNeuron:
    g = torch.Generator().manual_seed(len(shape) * 100 + shape[1])
    theta = torch.rand([1, shape[1]] + [1] * (len(shape) - 2), generator=g) + 0.25
    return SpikingNeuron(theta, coding="differential", floor=0.0, ceiling=ceiling, fuse=fuse)


def test_signature_normalises_python_values_and_owns_its_code():
    a = fused.StepSignature.of("differential", "mt", 8, True, 0, 6)
    b = fused.StepSignature.of("differential", "mt", 8.0, 1, 0.0, 6.0)
    c = fused.StepSignature.of("differential", "mt", 8, True, 0.0, None)
    assert a == b and hash(a) == hash(b) and a != c
    assert isinstance(a.floor, float) and isinstance(a.ceiling, float)
    code_a = fused._own_code_copy(fused.differential_step, a.tag()).__code__
    code_c = fused._own_code_copy(fused.differential_step, c.tag()).__code__
    assert code_a is not code_c and code_a is not fused.differential_step.__code__
    assert code_a.co_code == fused.differential_step.__code__.co_code and a.tag() in code_a.co_name
    # a neuron built with an int ceiling has the float signature
    assert _neuron((2, 3), True, 6)._signature() == _neuron((2, 3), True, 6.0)._signature()


def test_layers_of_every_shape_share_one_compiled_step(torch_warnings):
    """Eleven neurons of different ranks and sizes (1x1 and 2x2 maps, batch 1), ceilings given as
    int and float, stepped with counting on: one compilation, no recompile, no fallback, and
    spikes, states and counts equal to the eager step's."""
    torch._dynamo.reset()
    fused.clear_compiled()
    signature = None
    with torch.inference_mode():
        for i, shape in enumerate(SHAPES):
            ceiling = 6 if i % 2 else 6.0
            eager, fast = _neuron(shape, False, ceiling), _neuron(shape, True, ceiling)
            g = torch.Generator().manual_seed(i)
            for nrn in (eager, fast):
                nrn.count_spikes = True
            for t in range(4):
                x = torch.randn(shape, generator=g) * 2
                s_eager, s_fast = eager(x), fast(x)
                assert s_fast.shape == x.shape and torch.equal(s_eager, s_fast), (shape, t)
                if t > 0:
                    assert torch.equal(eager.last_counts, fast.last_counts), (shape, t)
                    assert int(fast.last_counts[0]) == int((s_fast != 0).sum())
            for name in ("v", "e_in", "e_out"):
                assert torch.equal(getattr(eager, name), getattr(fast, name)) and getattr(fast, name).shape == shape
            signature = fast._signature()
    assert fused.compiled_variants(signature) == 1
    assert not [m for m in torch_warnings if "recompile" in m or "eagerly" in m], torch_warnings


@pytest.mark.parametrize("coding", ["differential", "rate"])
def test_hits_per_position_from_the_step_equal_eager_across_shapes(coding, torch_warnings):
    """Neurons counting spikes per position (a convolution reads them): the fused step reduces the
    hits in its own loop on [batch·channels, positions] views, or, for 1x1 maps and a lead of one,
    in the flat kernel plus a separate reduction; spikes, states, counts and hits equal the eager
    step's and the recount from the spikes, each kernel compiling once."""
    torch._dynamo.reset()
    fused.clear_compiled()
    shapes = [(4, 8, 16, 16), (4, 8, 1, 1), (4, 8, 2, 2), (1, 1, 8, 8), (4, 16, 1, 2), (3, 8, 5, 5), (2, 4, 7)]
    with torch.inference_mode():
        for i, shape in enumerate(shapes):
            g = torch.Generator().manual_seed(50 + i)
            theta = torch.rand([1, shape[1]] + [1] * (len(shape) - 2), generator=g) + 0.25
            pair = [SpikingNeuron(theta, coding=coding, floor=0.0, ceiling=6.0, fuse=fuse) for fuse in (False, True)]
            for nrn in pair:
                nrn.count_spikes = nrn.count_positions = True
            for t in range(4):
                x = torch.randn(shape, generator=g) * 2
                (s_eager, s_fast) = (nrn(x) for nrn in pair)
                assert torch.equal(s_eager, s_fast), (shape, t)
                if coding == "rate" or t > 0:
                    eager, fast = pair
                    assert torch.equal(eager.last_counts, fast.last_counts), (shape, t)
                    assert fast.last_hits.dtype == torch.int64 and tuple(fast.last_hits.shape) == shape[2:]
                    assert torch.equal(eager.last_hits, fast.last_hits), (shape, t)
                    assert torch.equal(fast.last_hits, (s_fast != 0).sum(dim=(0, 1)))
    signatures = fused.compiled_signatures()
    assert any(s.positions for s in signatures) and any(s.count and not s.positions for s in signatures)
    assert all(fused.compiled_variants(s) == 1 for s in signatures)
    assert not [m for m in torch_warnings if "recompile" in m or "eagerly" in m], torch_warnings


@pytest.mark.slow
@pytest.mark.parametrize("coding", ["differential", "rate"])
def test_detector_with_tiny_fpn_levels_runs_fused_without_fallback(coding, torch_warnings):
    """A small FCOS (FPN levels down to 1x1) converted with fuse=true and simulated under the
    op counter at two image sizes: every step signature compiles once, nothing falls back to
    eager, and outputs and counts equal the fuse=false run's (issue 21)."""
    from tests.test_detection import _small_fcos

    from snnbench.counting import OpCounter
    from snnbench.methods.base import ConversionContext
    from snnbench.methods.dcgs import DCGS
    from snnbench.methods.snn.stats import collect_stats
    from snnbench.tasks.detection import DetectorCore

    torch._dynamo.reset()
    fused.clear_compiled()
    torch.manual_seed(0)
    core = DetectorCore(_small_fcos())
    inputs = [torch.randn(2, 3, 64, 64), torch.randn(2, 3, 96, 128)]
    results = {}
    for fuse in (False, True):
        method = DCGS({"threshold": "max", "coding": coding, "fuse": fuse})
        ctx = ConversionContext(T=3, example=inputs[0])
        snn = method.convert(core, collect_stats(core, [inputs[0]], method.stat_kinds(core, ctx)), ctx)
        runs = []
        for x in inputs:
            with torch.inference_mode(), OpCounter(snn, 3) as counter:
                snn.reset()
                outs = list(snn.simulate(x, 3))
                counter.add_samples(len(x))
            runs.append((outs[-1], counter.summary()))
        results[fuse] = runs
        neurons = [m for m in snn.modules() if isinstance(m, SpikingNeuron)]
        assert neurons and all(m.fuse == fuse for m in neurons)
    for (out_e, sum_e), (out_f, sum_f) in zip(results[False], results[True]):
        assert all(torch.equal(out_e[k], out_f[k]) for k in out_e)
        assert sum_e.events == sum_f.events and sum_e.unit_spikes == sum_f.unit_spikes
    signatures = fused.compiled_signatures()
    # one variant per signature (the 1x1 FPN levels' positioned steps take the flat signature)
    assert signatures and all(fused.compiled_variants(s) == 1 for s in signatures)
    assert not [m for m in torch_warnings if "recompile" in m or "eagerly" in m], torch_warnings

