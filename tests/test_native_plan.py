"""A neuron's repeated native step through its plan (methods/snn/native_neuron.py): the same
spikes, state and counts as the full path, bit for bit, and the full path again wherever
anything the plan was made for has changed."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from snnbench.methods.snn import native_neuron, native_steps
from snnbench.methods.snn.neurons import SpikingNeuron

SHAPE = (3, 4, 5, 6)


@pytest.fixture(autouse=True)
def one_thread(native_loops):
    """The native loops on one torch thread (conftest.native_loops)."""
    yield


def _neuron(coding: str, **kw) -> SpikingNeuron:
    theta = torch.rand(1, SHAPE[1], 1, 1, generator=torch.Generator().manual_seed(3)) + 0.2
    return SpikingNeuron(theta, rule="mt", n=4, coding=coding, signed=True, floor=0.0, fuse=True, **kw)


def _inputs(frames: int, permuted: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    first = torch.randn(1, *SHAPE[1:], generator=g).expand(SHAPE).contiguous()
    xs = [first] + [torch.randn(SHAPE, generator=g) for _ in range(frames - 1)]
    if permuted:  # read in place: a permuted view with a dense last dimension (attention's q)
        xs = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in xs]
    return xs


def _run(neuron: SpikingNeuron, xs: list[torch.Tensor], count: bool, positions: bool) -> list[torch.Tensor]:
    neuron.count_spikes, neuron.count_positions = count, positions
    out = []
    with torch.inference_mode():
        for x in xs:
            s = neuron(x)
            out += [s.clone()]
            out += [neuron.last_counts.clone()] if neuron.last_counts is not None else []
            out += [neuron.last_hits.clone()] if neuron.last_hits is not None else []
        out += [a.clone() for a in (neuron.v, neuron.e_in, neuron.e_out, neuron.c_out) if a is not None]
    return out


def _equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for p, q in zip(a, b):
        assert p.dtype == q.dtype and torch.equal(p.view(torch.int32) if p.dtype == torch.float32 else p,
                                                   q.view(torch.int32) if q.dtype == torch.float32 else q)


@pytest.fixture
def planned(monkeypatch):
    """Counts the steps the plan took (not None)."""
    taken = []
    real = native_neuron.fast_step

    def spy(neuron, x, skip):
        s = real(neuron, x, skip)
        taken.append(s is not None)
        return s

    monkeypatch.setattr(native_neuron, "fast_step", spy)
    return taken


@pytest.mark.parametrize("coding,count,positions,permuted", list(itertools.product(
    ["differential", "rate"], [False, True], [False, True], [False, True])))
def test_the_planned_step_equals_the_full_path(coding, count, positions, permuted, planned, monkeypatch):
    xs = _inputs(7, permuted)
    result = _run(_neuron(coding), xs, count, positions)
    # the full path takes: differential the bias pass, step 1 (from views) and step 2; rate steps 1, 2
    assert sum(planned) == len(xs) - (3 if coding == "differential" else 2)
    monkeypatch.setattr(native_neuron, "fast_step", lambda neuron, x, skip: None)
    _equal(result, _run(_neuron(coding), xs, count, positions))


def _steps(neuron: SpikingNeuron, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Steps with θ changed in place after 4 frames and the op counter's flag set after 6."""
    out = []
    with torch.inference_mode():
        for i, x in enumerate(xs):
            if i == 4:
                neuron.theta.mul_(1.25)  # a threshold rule changed θ in place: its version moved
            neuron.count_spikes = i >= 6
            out.append(neuron(x).clone())
    return out + [neuron.v, neuron.e_in, neuron.e_out]


def test_a_changed_threshold_or_counting_flag_takes_the_full_path_once(planned, monkeypatch):
    xs = _inputs(9)
    result = _steps(_neuron("differential"), xs)
    # full path: bias pass, steps 1 and 2, the step after θ changed, the first counted step
    assert planned == [True] * 1 + [False, True, False] + [True] * 2
    monkeypatch.setattr(native_neuron, "fast_step", lambda neuron, x, skip: None)
    _equal(result, _steps(_neuron("differential"), xs))


def test_the_plan_refuses_what_it_was_not_made_for(monkeypatch):
    neuron, xs = _neuron("differential"), _inputs(5)
    with torch.inference_mode():
        for x in xs[:4]:
            neuron(x)
        plan, t = neuron._native_plan, neuron.t
        assert plan is not None
        x = xs[4]
        refused = {
            "the state itself as input": neuron.v,
            "another shape": x[:2],
            "other strides, read in place": x.transpose(1, 2).contiguous().transpose(1, 2),
            "float64": x.double(),
        }
        for what, other in refused.items():
            assert native_neuron.fast_step(neuron, other, None) is None, what
        torch.set_num_threads(2)
        try:
            assert native_neuron.fast_step(neuron, x, None) is None
        finally:
            torch.set_num_threads(1)
        monkeypatch.setenv(native_steps.NATIVE_ENV, "0")
        assert native_neuron.fast_step(neuron, x, None) is None
        monkeypatch.delenv(native_steps.NATIVE_ENV)
        assert native_neuron.fast_step(neuron, x, None, ) is not None and neuron.t == t + 1
    with torch.no_grad():  # not inference mode: the plan was made under it
        assert native_neuron.fast_step(neuron, x, None) is None
    assert copy.deepcopy(neuron)._native_plan is None  # a loaded kernel is never copied
    neuron.reset()
    assert neuron._native_plan is None  # it held the state


def test_subclasses_never_get_a_plan():
    """A subclass may step otherwise (SRP, AdaFire): only SpikingNeuron itself keeps a plan."""

    class Subclass(SpikingNeuron):
        pass

    theta = torch.rand(1, SHAPE[1], 1, 1) + 0.2
    neuron = Subclass(theta, rule="mt", n=4, coding="differential", fuse=True)
    with torch.inference_mode():
        for x in _inputs(5):
            neuron(x)
            assert neuron._native_plan is None


#: where snn_step's argument list (native_steps.prepare, no first-step views) holds the addresses of
#: b, v, Ē_in, Ē_out, θ and the folded terms: what stays fixed from one planned step to the next
_FIXED_POINTERS = (9, 11, 12, 13, 14, 21, 22, 24, 25)


@pytest.mark.parametrize("coding,positions", list(itertools.product(["differential", "rate"], [False, True])))
def test_every_address_a_plan_holds_belongs_to_a_tensor_it_keeps(coding, positions):
    """θ's row layout is a copy the neuron caches: the plan must keep it (and b's row) alive
    itself, or a later cache refill would leave it reading freed memory."""
    neuron, xs = _neuron(coding), _inputs(4)
    neuron.count_spikes, neuron.count_positions = True, positions
    with torch.inference_mode():
        for x in xs:
            neuron(x)
    plan = neuron._native_plan
    assert plan is not None
    kept = [a for a in (*plan.state, *plan.keep, *plan.terms, plan.theta) if a is not None]

    def owned(address: int) -> bool:
        return any(t.untyped_storage().data_ptr() <= address < t.untyped_storage().data_ptr() + t.untyped_storage().nbytes()
                   for t in kept)

    held = [plan.arguments[i] for i in _FIXED_POINTERS if plan.arguments[i] is not None]
    assert len(held) >= (5 if coding == "differential" else 3)  # b, v, Ē_in, Ē_out, θ / v, C, θ
    assert all(owned(address) for address in held)
    neuron._theta_row = None  # the neuron's own cache forgotten: the plan still holds θ's row
    theta_row = plan.keep[0]
    assert theta_row.untyped_storage().data_ptr() <= plan.arguments[14] < (
        theta_row.untyped_storage().data_ptr() + theta_row.untyped_storage().nbytes())
