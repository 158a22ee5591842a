"""Op counts equal a brute-force count on small layers, strided and padded convs included."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from snnbench.counting import OpCounter, conv_fanout_map
from snnbench.methods.base import ConnectionSite, CountPlan, NeuronSite, SpikingModel


def brute_force_conv_ops(conv: nn.Conv2d, x: torch.Tensor) -> int:
    """Σ over output elements of the non-zero inputs inside their window (weights all 1)."""
    b, cin, h, w = x.shape
    ph, pw = conv.padding
    sh, sw = conv.stride
    dh, dw = conv.dilation
    kh, kw = conv.kernel_size
    g = conv.groups
    cout = conv.out_channels
    hout = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wout = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    total = 0
    cin_g, cout_g = cin // g, cout // g
    for n, co, i, j in itertools.product(range(b), range(cout), range(hout), range(wout)):
        grp = co // cout_g
        for ci, a, c in itertools.product(range(grp * cin_g, (grp + 1) * cin_g), range(kh), range(kw)):
            y, xx = i * sh - ph + a * dh, j * sw - pw + c * dw
            if 0 <= y < h and 0 <= xx < w and x[n, ci, y, xx] != 0:
                total += 1
    return total


class _Wrap(SpikingModel):
    def __init__(self, layer, kind="spike"):
        super().__init__()
        self.layer, self.kind = layer, kind

    def reset(self):
        pass

    def simulate(self, x, T):
        for t in range(1, T + 1):
            self.frame = t
            yield self.layer(x)

    def count_plan(self):
        op = "linear" if isinstance(self.layer, nn.Linear) else "conv"
        return CountPlan(connections=[ConnectionSite("layer", self.layer, self.kind, op=op)])


@pytest.mark.parametrize("kwargs", [dict(kernel_size=3, padding=1), dict(kernel_size=3, stride=2, padding=1),
                                    dict(kernel_size=2, stride=2), dict(kernel_size=5, padding=2, stride=3),
                                    dict(kernel_size=3, padding=2, dilation=2), dict(kernel_size=3, groups=2, padding=1)])
def test_conv_ops_equal_brute_force(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, **kwargs)
    x = (torch.rand(2, 4, 7, 9) < 0.3).float() * torch.randn(2, 4, 7, 9)
    model = _Wrap(conv)
    with OpCounter(model, T=2) as counter:
        list(model.simulate(x, 2))
        counter.add_samples(2)
    s = counter.summary()
    expected = brute_force_conv_ops(conv, x) / 2
    assert s.acs == [expected, 2 * expected] and s.macs == [0.0, 0.0]
    dense = brute_force_conv_ops(conv, torch.ones_like(x)) / 2
    assert s.dense_macs == dense


def test_fanout_map_matches_hand_count():
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1)
    fan = conv_fanout_map(conv, (4, 4), torch.device("cpu"))
    # output 2x2; windows centred on input rows/cols 0 and 2 cover rows {-1,0,1} and {1,2,3}
    expected = torch.tensor([[1, 2, 1, 1], [2, 4, 2, 2], [1, 2, 1, 1], [1, 2, 1, 1]])
    assert torch.equal(fan, expected)


def test_linear_ops_and_analog_inputs_count_as_macs():
    lin = nn.Linear(5, 3)
    x = torch.tensor([[0.0, 1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.5]])
    model = _Wrap(lin, kind="analog")
    with OpCounter(model, T=1) as counter:
        list(model.simulate(x, 1))
        counter.add_samples(2)
    s = counter.summary()
    assert s.macs == [(2 + 1) * 3 / 2] and s.acs == [0.0] and s.dense_macs == 15.0


def test_neuron_events_and_unit_spikes():
    class Emit(nn.Module):
        def forward(self, x):
            return x

    emit = Emit()

    class Model(_Wrap):
        def count_plan(self):
            return CountPlan(neurons=[NeuronSite("n", emit, unit=lambda: torch.tensor(0.25))])

    model = Model(emit)
    x = torch.tensor([[1.0, 0.0, -0.5, 0.25]])  # levels 1, 0.5, 0.25 of an n=3 MT neuron with θ=1
    with OpCounter(model, T=1) as counter:
        list(model.simulate(x, 1))
        counter.add_samples(1)
    s = counter.summary()
    assert s.events == [3.0] and s.unit_spikes == [4 + 2 + 1] and s.neuron_updates == [4.0]


def test_frame_zero_is_not_counted():
    lin = nn.Linear(2, 2)
    model = _Wrap(lin)

    def sim(x, T):
        for t in range(0, T + 1):
            model.frame = t
            yield lin(x)

    with OpCounter(model, T=2) as counter:
        list(sim(torch.ones(1, 2), 2))
        counter.add_samples(1)
    assert counter.summary().acs == [4.0, 8.0]


def test_spikes_through_average_pool_count_per_spike():
    """conv(avgpool(spikes)): each spike is one event reaching the conv through its pooled
    cell, so ACs = Σ_spikes C_out · fan-out(cell) (brute force), not Σ_nonzero-cells."""
    from snnbench.methods.snn.neurons import SpikingNeuron

    torch.manual_seed(0)
    neuron = SpikingNeuron(torch.tensor(1.0), rule="if", coding="rate", signed=False)
    pool = nn.AvgPool2d(2)
    conv = nn.Conv2d(3, 5, 3, padding=1)

    class Net(_Wrap):
        def simulate(self, x, T):
            for t in range(1, T + 1):
                self.frame = t
                yield conv(pool(neuron(x)))

        def count_plan(self):
            return CountPlan(connections=[ConnectionSite("conv", conv, "spike", op="conv", events_from=pool)],
                             neurons=[NeuronSite("n", neuron, unit=neuron.unit_amplitude)])

    x = torch.rand(2, 3, 8, 8) * 1.5
    model = Net(conv)
    neuron.reset()
    with OpCounter(model, T=1) as counter:
        spikes = neuron(x.clone())
        neuron.reset()
        list(model.simulate(x, 1))
        counter.add_samples(2)
    fan = conv_fanout_map(conv, (4, 4), torch.device("cpu"))
    expected = 0
    for b, c, i, j in zip(*torch.nonzero(spikes, as_tuple=True)):
        expected += 5 * int(fan[i // 2, j // 2])
    s = counter.summary()
    assert s.acs == [expected / 2] and s.events == [float((spikes != 0).sum()) / 2]


def test_converted_vgg_small_declares_spike_fed_layers(digits_vgg):
    from snnbench.methods.base import ConversionContext
    from snnbench.methods.dcgs import DCGS
    from snnbench.methods.snn.stats import collect_stats

    model = digits_vgg.core
    x = torch.randn(4, 1, 8, 8)
    method = DCGS({"threshold": "max"})
    ctx = ConversionContext(T=2, example=x)
    snn = method.convert(model, collect_stats(model, [x], method.stat_kinds(model, ctx)), ctx)
    kinds = {c.name: (c.input_kind, c.events_from is not None) for c in snn.count_plan().connections}
    assert kinds == {"features.0": ("analog", False),      # the analog image
                     "features.3": ("spike", False),
                     "features.7": ("spike", True),        # after an average pool
                     "features.10": ("spike", False),
                     "classifier.1": ("spike", True),      # pool + flatten
                     "classifier.3": ("spike", False)}


@pytest.mark.parametrize("fuse", [False, True], ids=["eager", "fused"])
@pytest.mark.parametrize("rule,coding", [("mt", "differential"), ("mt", "rate"), ("if", "rate")])
def test_neurons_counting_in_their_own_pass_match_their_outputs(rule, coding, fuse):
    """A SpikingNeuron under the counter counts its spikes in-step (last_counts); the
    totals equal events and Σ|s|/unit recounted from the spikes it emitted."""
    from snnbench.methods.snn.neurons import SpikingNeuron

    torch.manual_seed(5)
    theta = torch.rand(6, 1, 1) + 0.1
    neuron = SpikingNeuron(theta, rule=rule, n=4, coding=coding, signed=True, floor=0.0, fuse=fuse)

    class Model(_Wrap):
        def count_plan(self):
            return CountPlan(neurons=[NeuronSite("n", neuron, unit=neuron.unit_amplitude)],
                             first_counted_frame=1)

    model = Model(neuron)
    outputs = []
    handle = neuron.register_forward_hook(lambda m, a, out: outputs.append(out.clone()))
    x = torch.randn(3, 6, 5, 5) * 2
    T = 5
    with torch.inference_mode(), OpCounter(model, T=T) as counter:
        neuron.reset()
        frames = [x] * T if coding == "rate" else [torch.zeros_like(x), x] + [torch.zeros_like(x)] * (T - 1)
        for t, frame in enumerate(frames, start=0 if coding == "differential" else 1):
            model.frame = t
            neuron(frame)
            if t >= 1:
                assert neuron.last_counts is not None  # counted in its own pass
        counter.add_samples(3)
    handle.remove()
    assert not neuron.count_spikes and neuron.last_counts is None  # switched off on exit
    counted = outputs[1:] if coding == "differential" else outputs
    events = [float(sum(torch.count_nonzero(o) for o in counted[:t])) / 3 for t in range(1, T + 1)]
    unit = neuron.unit_amplitude().double()
    units = [float(sum((o.abs().double() / unit).sum() for o in counted[:t])) / 3 for t in range(1, T + 1)]
    s = counter.summary()
    assert s.events == pytest.approx(events, abs=0) and s.unit_spikes == pytest.approx(units, abs=0)
    assert s.events[-1] > 0 and (rule == "if" or s.unit_spikes[-1] > s.events[-1])


def _counts(snn, x, T, from_neurons: bool):
    counter = OpCounter(snn, T)
    if not from_neurons:  # the reference: every layer reads its own input
        for layer in counter.layers:
            layer.site.spikes_from = None
    with torch.inference_mode(), counter:
        snn.reset()
        for _ in snn.simulate(x, T):
            pass
        counter.add_samples(x.shape[0])
    return counter.summary()


@pytest.mark.parametrize("method_name", ["dcgs", "rate"])
@pytest.mark.parametrize("fuse", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "fused"])
def test_layers_fed_directly_by_neurons_take_counts_from_the_neurons_pass(digits_vgg, method_name, fuse):
    """Convolutions read the per-position spike map, linear layers the event count, that the
    feeding neuron computed in its own pass; every count equals the layers reading their input."""
    from snnbench.methods.base import ConversionContext
    from snnbench.methods.snn.stats import collect_stats
    from snnbench.methods.snn.neurons import SpikingNeuron
    from snnbench.plugins import create_method

    model = digits_vgg.core
    torch.manual_seed(3)
    x = torch.rand(6, 1, 8, 8) * 2
    method = create_method(method_name, {"threshold": "max", "fuse": fuse})
    ctx = ConversionContext(T=3, example=x)
    snn = method.convert(model, collect_stats(model, [x], method.stat_kinds(model, ctx)), ctx)
    direct = {c.name: c.spikes_from is not None for c in snn.count_plan().connections}
    assert direct == {"features.0": False, "features.3": True, "features.7": False, "features.10": True,
                      "classifier.1": False, "classifier.3": True}
    fast = _counts(snn, x, 4, from_neurons=True)
    slow = _counts(snn, x, 4, from_neurons=False)
    assert fast.acs == slow.acs and fast.macs == slow.macs and fast.events == slow.events
    assert fast.layers == slow.layers and fast.acs[-1] > 0
    assert not any(m.count_positions or m.last_hits is not None for m in snn.modules()
                   if isinstance(m, SpikingNeuron))  # switched off on exit


def test_can_emit_unit_magnitude_follows_the_levels():
    """MT levels are θ/2^k (k < n), IF's is θ: a spike can be ±1 only when some θ is such a power of two."""
    from snnbench.methods.snn.neurons import SpikingNeuron

    assert SpikingNeuron(torch.tensor([4.0]), rule="mt", n=3).can_emit_unit_magnitude()  # 4, 2, 1
    assert not SpikingNeuron(torch.tensor([8.0]), rule="mt", n=3).can_emit_unit_magnitude()  # 8, 4, 2
    assert not SpikingNeuron(torch.tensor([3.0, 0.7]), rule="mt", n=8).can_emit_unit_magnitude()
    neuron = SpikingNeuron(torch.tensor([2.0, 0.5]), rule="if")
    assert not neuron.can_emit_unit_magnitude()
    neuron.theta.fill_(1.0)  # in place: the cache follows the tensor's version
    assert neuron.can_emit_unit_magnitude()


@pytest.mark.parametrize("theta", [None, 1.0], ids=["calibrated", "unit-theta"])
def test_binary_inputs_and_nonzero_inputs_from_the_neurons_pass_equal_reading_the_input(digits_vgg, theta):
    """input_nonzero and unit_input_ops (AdaFire's density, NeuroBench's binary-input ACs) taken
    from the feeding neuron's counts equal the layers reading their input, also when θ = 1 makes
    the IF neurons' spikes exactly ±1 (then the input is read: it can be binary with spikes)."""
    from snnbench.methods.base import ConversionContext
    from snnbench.methods.snn.stats import collect_stats
    from snnbench.methods.snn.neurons import SpikingNeuron
    from snnbench.plugins import create_method

    model = digits_vgg.core
    torch.manual_seed(4)
    x = torch.rand(6, 1, 8, 8) * 2
    method = create_method("rate", {"threshold": "max", "fuse": False})
    ctx = ConversionContext(T=3, example=x)
    snn = method.convert(model, collect_stats(model, [x], method.stat_kinds(model, ctx)), ctx)
    if theta is not None:
        for m in snn.modules():
            if isinstance(m, SpikingNeuron):
                m.theta.fill_(theta)
    fast = _counts(snn, x, 4, from_neurons=True)
    slow = _counts(snn, x, 4, from_neurons=False)
    assert fast.layers == slow.layers
    connections = [layer for layer in fast.layers if "input_nonzero" in layer]  # (neuron rows have spikes)
    assert len(connections) == 6
    nonzero = [layer["input_nonzero"][-1] for layer in connections]
    binary_ops = [layer["unit_input_ops"][-1] for layer in connections]
    assert any(v > 0 for v in nonzero)
    assert any(v > 0 for v in binary_ops) == (theta == 1.0)


@pytest.mark.parametrize("method_name", ["dcgs", "rate"])
def test_layers_behind_an_average_pool_count_from_the_neurons_hit_map(digits_vgg, method_name, monkeypatch):
    """The conv and the linear layer behind vgg's average pools take their spikes per pooled cell
    from the emitting neuron's per-position hit map (sum-pooled) from the second counted frame
    on, and from a hit map read off the pool input in the first; every count equals pooling the
    per-element spike mask (PoolEvents.from_hits off)."""
    from snnbench.methods.base import ConversionContext
    from snnbench.methods.snn.stats import collect_stats
    from snnbench.plugins import create_method
    from snnbench.pool_events import PoolEvents

    model = digits_vgg.core
    torch.manual_seed(5)
    x = torch.rand(6, 1, 8, 8) * 2
    method = create_method(method_name, {"fuse": False})
    ctx = ConversionContext(T=3, example=x)
    snn = method.convert(model, collect_stats(model, [x], method.stat_kinds(model, ctx)), ctx)
    pooled = [c for c in snn.count_plan().connections if c.events_from is not None]
    assert {c.op for c in pooled} == {"conv", "linear"}
    taken = []
    record = PoolEvents.record

    def spy(self, pool, x, mask):
        record(self, pool, x, mask)
        taken.append(self._counts[id(pool)][1] is not None)
    monkeypatch.setattr(PoolEvents, "record", spy)
    fast = _counts(snn, x, 4, from_neurons=True)
    assert taken and all(taken)  # the first frame (which finds the neurons) reads the pool inputs' hit maps
    monkeypatch.setattr(PoolEvents, "from_hits", False)
    taken.clear()
    slow = _counts(snn, x, 4, from_neurons=True)
    assert not any(taken)
    assert fast == slow and fast.acs[-1] > 0
