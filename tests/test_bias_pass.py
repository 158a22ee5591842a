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


def _convert(name: str, method: str = "dcgs"):
    torch.manual_seed(0)
    spec = get_model_spec(name)
    model = spec.build(spec, in_shape=(1, 28, 28), num_classes=10).eval()
    x = torch.randn(8, 1, 28, 28)
    m = create_method(method, {})
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
