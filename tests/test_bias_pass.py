"""Differential coding's bias pass replayed from its cache (methods/snn/bias_pass.py): later
batches get the outputs, counts and unit states of a network that runs frame 0 every time,
bit for bit, and the cache steps aside wherever its premise does not hold."""

from __future__ import annotations

import pytest
import torch

from snnbench.counting import OpCounter
from snnbench.methods.base import ConversionContext
from snnbench.methods.snn.stats import collect_stats
from snnbench.methods.snn.units import StatefulUnit
from snnbench.plugins import create_method
from snnbench.tasks.zoo import get_model_spec

T = 4


def _convert(name: str, method: str = "dcgs", settings: dict | None = None):
    torch.manual_seed(0)
    spec = get_model_spec(name)
    model = spec.build(spec, in_shape=(1, 28, 28), num_classes=10).eval()
    x = torch.randn(8, 1, 28, 28)
    m = create_method(method, settings or {})
    ctx = ConversionContext(T=T, example=x, device=x.device, calib_batches=lambda: iter([x]))
    return m.convert(model, collect_stats(model, [x], m.stat_kinds(model, ctx)), ctx)


def _states(snn):
    out = []
    for module in snn.modules():
        if isinstance(module, StatefulUnit):
            for name in module._state_names:
                value = getattr(module, name)
                out.extend(value if isinstance(value, list) else [value])
    return out


def _run(snn, x, count: bool):
    snn.reset()
    with torch.inference_mode():
        if count:
            with OpCounter(snn, T) as counter:
                outs = [o.clone() for o in snn.simulate(x, T)]
                counter.add_samples(len(x))
                return outs, counter.summary(), _states(snn)
        return [o.clone() for o in snn.simulate(x, T)], None, _states(snn)


def _identical(a, b):
    assert all(torch.equal(p, q) for p, q in zip(a[0], b[0]))
    assert a[1] == b[1]
    assert len(a[2]) == len(b[2]) and all((p is None and q is None) or torch.equal(p, q) for p, q in zip(a[2], b[2]))


@pytest.mark.parametrize("name", ["vgg_small", "vit_mini"])
@pytest.mark.parametrize("count", [False, True])
def test_replayed_bias_pass_equals_running_it(name, count):
    cached, plain = _convert(name), _convert(name)
    plain.cache_bias_pass = False
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(8, 1, 28, 28, generator=g) for _ in range(3)]
    for i, x in enumerate(batches):
        _identical(_run(cached, x, count), _run(plain, x, count))
        assert cached.bias_pass.last == ("computed" if i == 0 else "replayed")


def test_a_new_shape_a_changed_layer_or_a_foreign_hook_runs_the_pass():
    snn = _convert("vgg_small")
    x = torch.randn(8, 1, 28, 28)
    _run(snn, x, False)
    _run(snn, x, False)
    assert snn.bias_pass.last == "replayed"
    _run(snn, x[:5], False)  # another batch size
    assert snn.bias_pass.last == "computed"
    norm = next(m for m in snn.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        norm.bias.add_(0.5)  # a layer changed in place: the frame-0 inputs change
    reference = _convert("vgg_small")
    with torch.no_grad():
        next(m for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d)).bias.add_(0.5)
    reference.cache_bias_pass = False
    _identical(_run(snn, x[:5], False), _run(reference, x[:5], False))
    assert snn.bias_pass.last == "computed"
    handle = norm.register_forward_hook(lambda *a: None)  # someone watches frame 0
    _run(snn, x[:5], False)
    assert snn.bias_pass.last == "not replayable"
    handle.remove()
    _run(snn, x[:5], False)
    assert snn.bias_pass.last == "replayed"


def test_rate_coding_has_no_bias_pass():
    snn = _convert("vgg_small", "rate")
    _run(snn, torch.randn(4, 1, 28, 28), False)
    assert snn.bias_pass.last == ""


def test_a_recording_over_the_memory_budget_is_not_kept():
    snn = _convert("vgg_small")
    snn.bias_pass.max_bytes = 1000  # far below one unit's input
    x = torch.randn(4, 1, 28, 28)
    _run(snn, x, False)
    _run(snn, x, False)
    assert snn.bias_pass.last == "computed"


@pytest.mark.parametrize("name", ["vgg_small", "vit_mini"])
def test_a_replay_forms_no_zeros_and_derives_each_bias_once(name, native_loops, monkeypatch):
    """After the first replay, a replayed unit neither runs its frame-0 forward (the zeros it
    would emit) nor derives b again: every unit's state comes from b kept per recorded input,
    and the outputs and states still equal a network that runs frame 0 every time (vgg_small:
    batch norms folded into the neurons, b != 0; vit_mini: permuted attention inputs, graded
    and product units)."""
    from snnbench.methods.snn import graded, native_layout, neurons

    cached, plain = _convert(name, settings={"fuse": "true"}), _convert(name, settings={"fuse": "true"})
    plain.cache_bias_pass = False
    for snn in (cached, plain):  # batch norms far from the identity (an untrained model's are near it)
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for norm in (m for m in snn.modules() if isinstance(m, torch.nn.BatchNorm2d)):
                for value, low, high in ((norm.running_mean, -1, 1), (norm.running_var, 0.5, 2),
                                         (norm.weight, 0.5, 2), (norm.bias, -1, 1)):
                    value.copy_(torch.rand(value.shape, generator=g) * (high - low) + low)
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(8, 1, 28, 28, generator=g) for _ in range(4)]
    for x in batches[:2]:
        _identical(_run(cached, x, False), _run(plain, x, False))
    derived, frame_zero = [], []
    real_bias, real_step, real_first = (native_layout.bias_input, neurons.SpikingNeuron._differential_step,
                                        graded.GradedUnit._first_frame)
    monkeypatch.setattr(native_layout, "bias_input", lambda x: derived.append(x) or real_bias(x))

    def step(self, x, *rest):
        frame_zero.extend([self] if self.t == 0 else [])
        return real_step(self, x, *rest)

    def first(self, *rest):
        frame_zero.append(self)
        return real_first(self, *rest)

    monkeypatch.setattr(neurons.SpikingNeuron, "_differential_step", step)
    monkeypatch.setattr(graded.GradedUnit, "_first_frame", first)
    for x in batches[2:]:
        result = _run(cached, x, False)
        assert cached.bias_pass.last == "replayed"
        assert derived == [] and frame_zero == []
        monkeypatch.setattr(native_layout, "bias_input", real_bias)
        _identical(result, _run(plain, x, False))
        monkeypatch.setattr(native_layout, "bias_input", lambda x: derived.append(x) or real_bias(x))
        frame_zero.clear()


def test_a_network_that_replayed_its_bias_pass_pickles_and_copies(native_loops):
    """The replay's per-input cache holds weak references, which do not pickle: copies and
    pickles drop it, derive b again on their next replay, and give the original's outputs."""
    import copy
    import pickle

    snn = _convert("vgg_small", settings={"fuse": "true"})
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(8, 1, 28, 28, generator=g) for _ in range(3)]
    for x in batches[:2]:
        _run(snn, x, False)
    assert snn.bias_pass.last == "replayed"
    assert any("_replay_cache" in m.__dict__ for m in snn.modules())
    for other in (pickle.loads(pickle.dumps(snn)), copy.deepcopy(snn)):
        assert not any("_replay_cache" in m.__dict__ for m in other.modules())
        _identical(_run(other, batches[2], False), _run(snn, batches[2], False))
