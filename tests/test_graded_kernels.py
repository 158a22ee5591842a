"""The compiled graded-unit kernels (methods/snn/graded_kernels.py): a fused GradedUnit or
ProductUnit step equals the eager step bit for bit, in both codings and every input layout,
updates its state in place, and steps eagerly wherever the kernels do not apply."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from snnbench.methods.snn import graded_kernels
from snnbench.methods.snn.graded import GradedUnit, ProductUnit

T = 7


@pytest.fixture(autouse=True)
def small_tensors_compiled(monkeypatch):
    """The tests' tensors are small: compile them anyway (the size rule has its own test). These
    are the compiled and in-place torch paths: the native loops, which one torch thread would
    take, have their own tests (test_native_steps.py), so a one-core machine runs these too."""
    monkeypatch.setattr(graded_kernels, "MIN_ELEMENTS", 0)
    monkeypatch.setenv("SNNBENCH_NATIVE", "0")


@pytest.fixture
def kernel_calls(monkeypatch):
    """The names of the compiled kernels each step ran (a spy on graded_kernels.run)."""
    calls: list[str] = []
    real = graded_kernels.run

    def spy(name, *tensors):
        calls.append(name)
        return real(name, *tensors)

    monkeypatch.setattr(graded_kernels, "run", spy)
    return calls


def _inputs(shape, steps=T, seed=0, layout=None):
    g = torch.Generator().manual_seed(seed)
    xs = []
    for _ in range(steps + 1):
        x = torch.randn(shape, generator=g)
        xs.append(layout(x) if layout else x)
    return xs


def _trace(unit, xs, *extra):
    unit.reset()
    outs = [unit(x, *extra).clone() for x in xs]
    return outs, [a.clone() for a in unit.acc], unit.last.clone()


def _assert_identical(fast, slow):
    for a, b in zip(fast[0], slow[0]):
        assert a.shape == b.shape and a.stride() == b.stride()
        assert torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(fast[1], slow[1]))
    assert torch.equal(fast[2], slow[2])


LAYOUTS = {
    "contiguous": None,
    "transposed": lambda x: x.transpose(-2, -1),          # dense, not contiguous: the memory-order view
    "permuted": lambda x: x.permute(2, 0, 1),
}
FUNCTIONS = {
    "gelu": (F.gelu, ()),
    "softmax": (torch.Tensor.softmax, (-1,)),
    "layer_norm": (F.layer_norm, ((5,),)),
}


@pytest.mark.parametrize("coding", ["differential", "rate"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_fused_graded_step_is_bit_identical_to_eager(coding, layout, function, kernel_calls):
    fn, extra = FUNCTIONS[function]
    xs = _inputs((4, 5, 5), layout=LAYOUTS[layout])
    slow = _trace(GradedUnit(fn, (0,), coding=coding), xs, *extra)
    assert not kernel_calls
    fast = _trace(GradedUnit(fn, (0,), coding=coding, fuse=True), xs, *extra)
    _assert_identical(fast, slow)
    inputs = "differential_inputs" if coding == "differential" else "rate_inputs"
    outputs = "differential_output" if coding == "differential" else "rate_output"
    # every step after the first frame ran both kernels
    assert kernel_calls.count(inputs) == T and kernel_calls.count(outputs) == T


def test_decoded_output_converges_to_function_of_decoded_input():
    """The fused path keeps the unit's decoding identity: Σ_τ out_τ/τ = fn(mean input) exactly
    in exact arithmetic; with constant inputs E_t stays x and the decoded output is fn(x)."""
    x = torch.randn(3, 6)
    for coding in ("differential", "rate"):
        unit = GradedUnit(F.gelu, (0,), coding=coding, fuse=True)
        outs = [unit(x) for _ in range(6)]
        if coding == "differential":
            decoded = sum(o / t for t, o in enumerate(outs[1:], start=1))
        else:
            decoded = sum(outs) / len(outs)
        torch.testing.assert_close(decoded, F.gelu(x), rtol=1e-5, atol=1e-6)


def test_state_is_updated_in_place():
    unit = GradedUnit(F.gelu, (0,), fuse=True)
    xs = _inputs((2, 3, 4))
    unit(xs[0])
    acc = unit.acc[0]
    pointer = acc.data_ptr()
    unit(xs[1])
    assert unit.acc[0].data_ptr() == pointer  # E written into its own tensor: no allocation per step
    torch.testing.assert_close(unit.acc[0], xs[0] + (xs[1] - xs[0]) / 1)


def test_function_returning_a_view_of_its_input_keeps_last_output():
    """fn = a reshape returns a view of E; the in-place update of E must not change the unit's
    remembered last output (it is copied), so the outputs stay those of eager."""
    fn = lambda e: e.reshape(-1)  # noqa: E731
    xs = _inputs((3, 4))
    slow = _trace(GradedUnit(fn, (0,)), xs)
    fast = _trace(GradedUnit(fn, (0,), fuse=True), xs)
    _assert_identical(fast, slow)


def test_small_tensors_step_eagerly(monkeypatch, kernel_calls):
    monkeypatch.setattr(graded_kernels, "MIN_ELEMENTS", 13)
    small, large = _inputs((3, 4)), _inputs((3, 5))
    _assert_identical(_trace(GradedUnit(F.gelu, (0,), fuse=True), small), _trace(GradedUnit(F.gelu, (0,)), small))
    assert not kernel_calls
    _assert_identical(_trace(GradedUnit(F.gelu, (0,), fuse=True), large), _trace(GradedUnit(F.gelu, (0,)), large))
    assert kernel_calls.count("differential_inputs") == T


def test_non_dense_or_unowned_inputs_step_eagerly(kernel_calls):
    """A strided slice (not dense) and inputs that require grad take the eager step; results equal."""
    sliced = _inputs((4, 10))
    sliced = [x[:, ::2] for x in sliced]
    _assert_identical(_trace(GradedUnit(F.gelu, (0,), fuse=True), sliced), _trace(GradedUnit(F.gelu, (0,)), sliced))
    assert "differential_inputs" not in kernel_calls
    with torch.enable_grad():
        xs = [x.requires_grad_() for x in _inputs((3, 4))]
        unit = GradedUnit(F.gelu, (0,), fuse=True)
        out = sum(unit(x).sum() for x in xs)
        out.backward()  # an autograd graph through every step (no in-place update broke it)
    assert "differential_inputs" not in kernel_calls
    assert xs[0].grad is not None


def _product_trace(coding, fuse, qs, ks):
    """A counting q·kᵀ product unit stepped on ``qs``, ``ks``: its outputs, op counts, the decoded
    operands before each step (zeros before the first) and the decoded operands at the end."""
    unit = ProductUnit(torch.matmul, (0, 1), coding=coding, fuse=fuse)
    unit.counting = True
    outs, ops, prevs = [], [], []
    for q, k in zip(qs, ks):
        prevs.append([torch.zeros_like(q), torch.zeros_like(k)] if unit.acc is None or (
            coding == "differential" and unit.t == 0) else [a.clone() for a in unit.acc])
        outs.append(unit(q, k).clone())
        ops.append(int(unit.last_ops))
    return outs, ops, prevs, [a.clone() for a in unit.acc]


@pytest.mark.parametrize("coding", ["differential", "rate"])
def test_fused_product_unit_counts_and_outputs_equal_eager(coding, kernel_calls):
    """q·kᵀ with a transposed operand and spike-like sparse inputs: identical outputs, identical
    three-term op counts (an independent count: the indicator matmuls themselves)."""
    g = torch.Generator().manual_seed(3)

    def spikes(shape):
        x = torch.randn(shape, generator=g)
        return x * (torch.rand(shape, generator=g) < 0.3)

    qs = [spikes((2, 3, 6, 4)) for _ in range(T + 1)]
    ks = [spikes((2, 3, 6, 4)).transpose(-2, -1) for _ in range(T + 1)]
    results = {fuse: _product_trace(coding, fuse, qs, ks) for fuse in (False, True)}
    ind = lambda x: (x != 0).float()  # noqa: E731
    for outs, ops, prevs, _ in results.values():
        for q, k, prev, counted in zip(qs, ks, prevs, ops):
            expected = (ind(q) @ ind(k) + ind(q) @ ind(prev[1]) + ind(prev[0]) @ ind(k)).sum()
            assert counted == int(expected)
    assert results[True][1] == results[False][1]
    assert all(torch.equal(a, b) for a, b in zip(results[True][0], results[False][0]))
    assert kernel_calls.count("matmul_pair_ops") == T + 1


@pytest.mark.parametrize("shapes", [((2, 3, 6, 4), (2, 3, 4, 5)), ((2, 3, 6, 4), (4, 5)), ((6, 4), (2, 4, 5))])
def test_compiled_pair_count_equals_indicator_matmuls_under_broadcasting(shapes):
    """The compiled count (column counts broadcast over the right operand) and the eager one (column
    times row counts) both equal the three indicator matmuls, batch dimensions broadcast as matmul does."""
    g = torch.Generator().manual_seed(5)
    a, b, prev_a, prev_b = (torch.randn(s, generator=g) * (torch.rand(s, generator=g) < 0.4)
                            for s in (shapes[0], shapes[1], shapes[0], shapes[1]))
    ind = lambda x: (x != 0).double()  # noqa: E731
    expected = int((ind(a) @ ind(b) + ind(a) @ ind(prev_b) + ind(prev_a) @ ind(b)).sum())
    assert int(graded_kernels.matmul_pair_ops(a, b, prev_a, prev_b)) == expected
    assert int(graded_kernels.run("matmul_pair_ops", a, b, prev_a, prev_b)) == expected


def test_compile_failure_falls_back_to_eager_once(monkeypatch, caplog):
    graded_kernels.clear_compiled()

    def broken(*args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("no compiler here")
        return fail

    monkeypatch.setattr(torch, "compile", broken)
    xs = _inputs((3, 4))
    with caplog.at_level(logging.WARNING, logger=graded_kernels.__name__):
        fast = _trace(GradedUnit(F.gelu, (0,), fuse=True), xs)
    _assert_identical(fast, _trace(GradedUnit(F.gelu, (0,)), xs))
    warnings = [r for r in caplog.records if "graded-unit kernel" in r.getMessage()]
    assert len(warnings) == 2  # one per kernel (inputs, output), not one per step
    graded_kernels.clear_compiled()


def test_flat_views_follow_memory_order():
    x = torch.arange(24.0).reshape(2, 3, 4)
    t = x.permute(2, 0, 1)
    (view,) = graded_kernels.flat_views([t])
    assert torch.equal(view, torch.arange(24.0))  # memory order, not logical order
    assert graded_kernels.flat_views([x[:, :, ::2]]) is None
    assert graded_kernels.flat_views([x, t]) is None  # one layout per call
    assert graded_kernels.flat_views([x.to(torch.int64)]) is None


@pytest.mark.parametrize("method", ["dcgs", "rate"])
def test_transformer_fused_equals_eager_outputs_and_counts(method):
    """vit_mini (LayerNorm, softmax, GELU, q·kᵀ and attn·v units): fuse=true (compiled neuron and
    graded kernels, counts from the compiled product count) gives the eager network's outputs and
    every field of its CountSummary, bit for bit."""
    from snnbench.counting import OpCounter
    from snnbench.methods.base import ConversionContext
    from snnbench.methods.snn.stats import collect_stats
    from snnbench.plugins import create_method
    from snnbench.tasks.zoo import get_model_spec

    torch.manual_seed(0)
    spec = get_model_spec("vit_mini")
    model = spec.build(spec, in_shape=(1, 28, 28), num_classes=10).eval()
    x = torch.randn(6, 1, 28, 28)
    results = {}
    for fuse in (False, True):
        m = create_method(method, {"fuse": fuse})
        ctx = ConversionContext(T=4, example=x, device=x.device, calib_batches=lambda: iter([x]))
        snn = m.convert(model, collect_stats(model, [x], m.stat_kinds(model, ctx)), ctx)
        units = [u for u in snn.modules() if isinstance(u, GradedUnit)]
        assert len(units) == 25 and all(u.fuse is fuse for u in units)
        with torch.inference_mode(), OpCounter(snn, 4) as counter:
            snn.reset()
            outs = [o.clone() for o in snn.simulate(x, 4)]
            counter.add_samples(len(x))
            results[fuse] = outs, counter.summary()
    assert all(torch.equal(a, b) for a, b in zip(results[True][0], results[False][0]))
    assert results[True][1] == results[False][1]


# -- below MIN_ELEMENTS: the eager step with the state updated in place ------------------------
@pytest.fixture
def in_place_sizes(monkeypatch):
    """Every tensor of these tests is below the compiled kernels' size: the in-place eager step."""
    monkeypatch.setattr(graded_kernels, "MIN_ELEMENTS", 1 << 40)


@pytest.mark.parametrize("coding", ["differential", "rate"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_in_place_small_step_is_bit_identical_to_eager(coding, layout, function, in_place_sizes, kernel_calls):
    fn, extra = FUNCTIONS[function]
    xs = _inputs((4, 5, 5), layout=LAYOUTS[layout])
    slow = _trace(GradedUnit(fn, (0,), coding=coding), xs, *extra)
    unit = GradedUnit(fn, (0,), coding=coding, fuse=True)
    _assert_identical(_trace(unit, xs, *extra), slow)
    assert not kernel_calls  # no compiled kernel ran
    unit.reset()
    unit(xs[0], *extra)
    before, pointer = unit.acc[0], unit.acc[0].data_ptr()
    unit(xs[1], *extra)
    unit(xs[2], *extra)
    assert unit.acc[0] is before and before.data_ptr() == pointer  # E updated in its own tensor


def test_in_place_step_keeps_last_output_when_fn_returns_a_view(in_place_sizes):
    fn = lambda e: e.reshape(-1)  # noqa: E731
    xs = _inputs((3, 4))
    _assert_identical(_trace(GradedUnit(fn, (0,), fuse=True), xs), _trace(GradedUnit(fn, (0,)), xs))


@pytest.mark.parametrize("coding", ["differential", "rate"])
def test_in_place_product_unit_equals_eager_with_counts(coding, in_place_sizes):
    """q·kᵀ below the kernels' size: outputs, decoded operands and three-term op counts equal eager."""
    g = torch.Generator().manual_seed(4)
    qs = [torch.randn(2, 3, 6, 4, generator=g) for _ in range(T + 1)]
    ks = [torch.randn(2, 3, 6, 4, generator=g).transpose(-2, -1) for _ in range(T + 1)]
    results = {fuse: _product_trace(coding, fuse, qs, ks) for fuse in (False, True)}
    assert results[True][1] == results[False][1]
    assert all(torch.equal(a, b) for a, b in zip(results[True][0], results[False][0]))
    assert all(torch.equal(a, b) for a, b in zip(results[True][3], results[False][3]))


def test_in_place_step_falls_back_where_shapes_or_grads_forbid_it(in_place_sizes):
    """An input that broadcasts against its state (other shape) and inputs that require grad step
    functionally: the same results as eager, the state tensor replaced, not overwritten."""
    xs = _inputs((3, 4))
    narrow = [xs[0]] + [x[:1] for x in xs[1:]]  # frame 0 fixes E's shape (3, 4); later rows broadcast
    unit = GradedUnit(F.gelu, (0,), fuse=True)
    fast = _trace(unit, narrow)
    _assert_identical(fast, _trace(GradedUnit(F.gelu, (0,)), narrow))
    with torch.enable_grad():
        grads = [x.clone().requires_grad_() for x in xs]
        unit = GradedUnit(F.gelu, (0,), fuse=True)
        unit(grads[0])
        before = unit.acc[0]
        out = sum(unit(x).sum() for x in grads[1:])
        out.backward()
    assert unit.acc[0] is not before and grads[1].grad is not None
