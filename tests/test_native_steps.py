"""The native C neuron steps (methods/snn/native_steps.py): bit-identical to the eager step for every
signature, counts equal to an independent count, b kept as one sample where the bias pass allows,
and a missing compiler or more than one thread leave the step to inductor or eager."""

from __future__ import annotations

import itertools
import logging

import pytest
import torch
import torch.nn.functional as F

from snnbench.methods.snn import fused, graded_kernels, native_graded, native_layout, native_steps
from snnbench.methods.snn.graded import GradedUnit, ProductUnit
from snnbench.methods.snn.neurons import SpikingNeuron

SHAPE = (3, 4, 5, 6)


@pytest.fixture(autouse=True)
def one_thread(native_loops):
    """Every test here runs with the native loops on one torch thread (conftest.native_loops)."""
    yield


def _theta() -> torch.Tensor:
    theta = torch.rand(1, SHAPE[1], 1, 1, generator=torch.Generator().manual_seed(3)) + 0.2
    theta[0, 1] = 0.0  # a dead channel never fires
    return theta


def _inputs(theta: torch.Tensor, frames: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    first = torch.randn(1, *SHAPE[1:], generator=g).expand(SHAPE).contiguous()  # the same for every sample
    xs = [first] + [torch.randn(SHAPE, generator=g) * 0.7 for _ in range(frames - 1)]
    th = float(theta[0, 0, 0, 0])
    # signed zeros and values on the firing boundaries 0.75·θ/2^k and θ
    xs[1][0, 0, 0, :5] = torch.tensor([-0.0, 0.0, th, 0.75 * th, -0.75 * th / 4])
    return xs


def _trace(neuron: SpikingNeuron, xs: list[torch.Tensor], count: bool, positions: bool) -> list:
    neuron.reset()
    neuron.count_spikes, neuron.count_positions = count, positions
    out = []
    with torch.inference_mode():
        for x in xs:
            s = neuron(x.clone())
            out.append([s.clone(), neuron.last_counts, neuron.last_hits])
        out.append([getattr(neuron, name) for name in ("v", "e_in", "e_out", "c_out")])
    return out


def _bits(a: torch.Tensor | None):
    return None if a is None else (a.shape, a.view(torch.int32).tolist() if a.dtype == torch.float32 else a.tolist())


def _assert_identical(a: list, b: list) -> None:
    for step_a, step_b in zip(a, b, strict=True):
        for p, q in zip(step_a, step_b, strict=True):
            assert _bits(p) == _bits(q)  # bit for bit: -0.0 is not +0.0


SIGNATURES = [(coding, rule, n, signed, floor, ceiling)
              for coding, (rule, n), signed, floor, ceiling in itertools.product(
                  ["differential", "rate"], [("mt", 8), ("mt", 3), ("if", 1)], [True, False], [0.0, None, 0.5],
                  [None, 6.0])]


@pytest.mark.parametrize("coding,rule,n,signed,floor,ceiling", SIGNATURES)
def test_native_step_equals_the_eager_step_bit_for_bit(coding, rule, n, signed, floor, ceiling, monkeypatch):
    monkeypatch.setattr(fused, "compiled", lambda *a: pytest.fail("the inductor kernel ran instead of the native one"))
    theta = _theta()
    xs = _inputs(theta)
    for count, positions in [(False, False), (True, False), (True, True)]:
        eager, native = (SpikingNeuron(theta, rule=rule, n=n, coding=coding, signed=signed, floor=floor,
                                       ceiling=ceiling, fuse=fuse) for fuse in (False, True))
        _assert_identical(_trace(eager, xs, count, positions), _trace(native, xs, count, positions))
    assert len(native_steps._LOADED) == 3 and not native_steps._FAILED


@pytest.mark.parametrize("if_negative", ["below_zero", "at_or_below_zero"])
def test_native_if_neuron_fires_negative_spikes_by_its_rule(if_negative):
    theta = _theta()
    xs = _inputs(theta)
    xs[2] = torch.zeros(SHAPE)  # v = 0 exactly for some neurons: fires -θ only at v <= 0
    eager, native = (SpikingNeuron(theta, rule="if", coding="differential", signed=True, floor=None, fuse=fuse,
                                   if_negative=if_negative) for fuse in (False, True))
    _assert_identical(_trace(eager, xs, True, True), _trace(native, xs, True, True))


def test_native_counts_equal_an_independent_count_of_the_spikes():
    theta = _theta()
    neuron = SpikingNeuron(theta, rule="mt", n=8, coding="differential", floor=0.0, fuse=True)
    neuron.count_spikes = neuron.count_positions = True
    unit = (theta / 2**7).double()
    with torch.inference_mode():
        neuron(_inputs(theta)[0])
        for x in _inputs(theta)[1:]:
            s = neuron(x)
            events, units = neuron.last_counts.tolist()
            assert events == int((s != 0).sum())
            spikes = (s.double().abs() / unit.clamp_min(1e-30)).sum()
            assert units == spikes.item() and units > 0
            assert neuron.last_hits.tolist() == (s != 0).sum(dim=(0, 1)).tolist()


def test_bias_input_is_kept_as_one_sample_only_when_every_sample_has_it():
    theta = _theta()
    xs = _inputs(theta)
    for first, rows in [(xs[0], 1), (torch.randn(SHAPE), SHAPE[0])]:
        frames = [first, *xs[1:]]
        native, eager = (SpikingNeuron(theta, coding="differential", floor=0.0, fuse=fuse) for fuse in (True, False))
        with torch.inference_mode():
            native(frames[0].clone())
        assert native.b.shape[0] == rows
        _assert_identical(_trace(eager, frames, True, True), _trace(native, frames, True, True))
    one = torch.zeros(SHAPE)
    one[2, 0, 0, 0] = -0.0  # a sign bit differs: the samples are not the same
    neuron = SpikingNeuron(theta, coding="differential", floor=0.0, fuse=True)
    with torch.inference_mode():
        neuron(one)
    assert neuron.b.shape[0] == SHAPE[0]


def test_inductor_path_expands_a_one_sample_b(monkeypatch):
    """With two threads the inductor kernel runs; it reads b at the input's size."""
    torch.set_num_threads(2)
    calls = []
    monkeypatch.setattr(native_steps, "prepare", lambda *a, **k: calls.append(1))
    theta = _theta()
    xs = _inputs(theta, frames=3)
    eager, compiled = (SpikingNeuron(theta, coding="differential", floor=0.0, fuse=fuse) for fuse in (False, True))
    _assert_identical(_trace(eager, xs, True, False), _trace(compiled, xs, True, False))
    assert compiled.b.shape[0] == 1 and not calls


def test_a_missing_compiler_warns_once_and_the_step_still_runs(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv(native_steps.DIR_ENV, str(tmp_path / "empty"))
    theta = _theta()
    xs = _inputs(theta, frames=4)
    eager, fallback = (SpikingNeuron(theta, coding="differential", floor=0.0, fuse=fuse) for fuse in (False, True))
    monkeypatch.setattr(fused, "compiled", _eager_kernel)  # no inductor compilation in this test
    with caplog.at_level(logging.WARNING, logger=native_steps.__name__):
        _assert_identical(_trace(eager, xs, True, False), _trace(fallback, xs, True, False))
    warnings = [r for r in caplog.records if r.name == native_steps.__name__]
    assert len(warnings) == 1 and "could not be built" in warnings[0].getMessage()
    assert native_steps._FAILED and not native_steps._LOADED


def _eager_kernel(signature):
    """The in-place kernel of ``signature`` uncompiled (stands in for inductor in the test above)."""
    kernels = fused._HITS_KERNELS if signature.positions else fused._KERNELS
    return kernels[signature.coding]


def test_a_built_kernel_is_loaded_from_the_cache_without_compiling(monkeypatch, tmp_path):
    monkeypatch.setenv(native_steps.DIR_ENV, str(tmp_path))
    signature = fused.StepSignature.of("differential", "mt", 8, True, 0.0, None, count=True)
    assert native_steps.kernel(signature) is not None
    assert len(list(tmp_path.glob("step_*.so"))) == 1
    native_steps.clear()
    monkeypatch.setattr(native_steps.subprocess, "run", lambda *a, **k: pytest.fail("compiled again"))
    assert native_steps.kernel(signature) is not None


def test_native_steps_switch_off_by_environment(monkeypatch):
    monkeypatch.setenv(native_steps.NATIVE_ENV, "0")
    signature = fused.StepSignature.of("rate", "if", 1, False, 0.0, None)
    assert not native_steps.usable(signature, [torch.zeros(4)])
    monkeypatch.setenv(native_steps.NATIVE_ENV, "1")
    assert native_steps.usable(signature, [torch.zeros(4)])
    assert not native_steps.usable(signature, [torch.zeros(4, dtype=torch.float64)])
    assert not native_steps.usable(signature, [torch.zeros(4, 4).t()])
    assert not native_steps.usable(fused.StepSignature.of("rate", "mt", 17, False, 0.0, None), [torch.zeros(4)])


def _graded_trace(unit, xs, *extra):
    unit.reset()
    with torch.inference_mode():
        outs = [unit(x.clone(), *extra).clone() for x in xs]
    return [outs, list(unit.acc), [unit.last]]


GRADED_FUNCTIONS = {"layer_norm": lambda x: F.layer_norm(x, x.shape[-1:]), "softmax": lambda x: x.softmax(-1),
                    "gelu": F.gelu}


@pytest.mark.parametrize("coding", ["differential", "rate"])
@pytest.mark.parametrize("name", sorted(GRADED_FUNCTIONS))
def test_native_graded_updates_equal_the_eager_step_bit_for_bit(coding, name, monkeypatch):
    calls = []
    for fn_name in ("differential_inputs", "graded_output", "first_inputs", "rate_inputs"):
        real = getattr(native_graded, fn_name)
        monkeypatch.setattr(native_graded, fn_name, lambda *a, real=real, n=fn_name, **k: calls.append(n) or real(*a, **k))
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(4, 7, 12, generator=g) for _ in range(6)]
    fast, slow = (GradedUnit(GRADED_FUNCTIONS[name], coding=coding, fuse=fuse) for fuse in (True, False))
    _assert_identical(_graded_trace(fast, xs), _graded_trace(slow, xs))
    if coding == "differential":  # step 1 from the bias pass's views, then one-pass updates and increments
        assert calls == ["first_inputs"] + ["differential_inputs", "graded_output"] * (len(xs) - 2)
    else:  # S += x with S/t in one pass, then the increment, every step after the first
        assert calls == ["rate_inputs", "graded_output"] * (len(xs) - 1)


def test_native_product_updates_equal_the_eager_step_bit_for_bit(monkeypatch):
    calls = []
    for fn_name in ("differential_inputs", "first_inputs", "rate_inputs"):
        real = getattr(native_graded, fn_name)
        monkeypatch.setattr(native_graded, fn_name, lambda *a, real=real, n=fn_name: calls.append(n) or real(*a))
    g = torch.Generator().manual_seed(6)
    xs = [torch.randn(3, 5, 8, generator=g) for _ in range(6)]
    ys = [torch.randn(3, 8, 4, generator=g) for _ in range(6)]

    def trace(unit):
        unit.reset()
        with torch.inference_mode():
            outs = [unit(x.clone(), y.clone()).clone() for x, y in zip(xs, ys)]
        return [outs, list(unit.acc), [unit.last]]

    for coding in ("differential", "rate"):
        calls.clear()
        fast, slow = (ProductUnit(torch.matmul, coding=coding, fuse=fuse) for fuse in (True, False))
        _assert_identical(trace(fast), trace(slow))
        if coding == "differential":  # both operands of every step after the bias pass (step 1: from its views)
            assert calls == ["first_inputs"] * 2 + ["differential_inputs"] * 2 * (len(xs) - 2)
        else:  # both operands of every step after the first
            assert calls == ["rate_inputs"] * 2 * (len(xs) - 1)


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "batched-2d"])
def test_native_product_op_count_equals_the_eager_count(layout):
    g = torch.Generator().manual_seed(7)
    sparse = lambda *shape: torch.randn(*shape, generator=g).clamp_min(0.4) - 0.4  # noqa: E731  (~65 % zeros)
    if layout == "batched-2d":
        a, pa, b, pb = sparse(5, 9), sparse(5, 9), sparse(9, 4), sparse(9, 4)
    else:
        a, pa = sparse(2, 3, 5, 9), sparse(2, 3, 5, 9)
        b, pb = sparse(2, 3, 9, 4), sparse(2, 3, 9, 4)
        if layout == "transposed":  # kᵀ: a transposed view, as q·kᵀ passes it
            b, pb = sparse(2, 3, 4, 9).transpose(-1, -2), sparse(2, 3, 4, 9).transpose(-1, -2)
    native = native_graded.matmul_pair_ops(a, b, pa, pb)
    eager = graded_kernels.matmul_pair_ops(a, b, pa, pb)
    independent = sum(int(((x != 0).double() @ (y != 0).double()).sum()) for x, y in [(a, b), (a, pb), (pa, b)])
    assert native.dtype == torch.int64 and int(native) == int(eager) == independent > 0
    assert native_graded.matmul_pair_ops(a[..., :1, :], b, pa, pb) is None  # operand shapes differ


@pytest.mark.parametrize("threads", [1, 2])
def test_a_threshold_changed_in_place_between_runs_is_the_one_the_fused_step_uses(threads):
    """The cached layouts of θ (row for the native step, flat for inductor) follow θ's version."""
    torch.set_num_threads(threads)
    theta = _theta()
    xs = _inputs(theta, frames=4)
    eager, fused_neuron = (SpikingNeuron(theta, coding="differential", floor=0.0, fuse=fuse) for fuse in (False, True))
    _assert_identical(_trace(eager, xs, True, False), _trace(fused_neuron, xs, True, False))
    for neuron in (eager, fused_neuron):
        with torch.no_grad():
            neuron.theta.mul_(0.5)  # a threshold rule rewriting θ in place
    _assert_identical(_trace(eager, xs, True, False), _trace(fused_neuron, xs, True, False))


@pytest.mark.parametrize("coding", ["differential", "rate"])
def test_the_first_step_reads_the_initial_state_as_rows_and_writes_it_at_full_size(coding, monkeypatch):
    """After the bias pass (rate: before step 1) v, Ē_in, Ē_out / C are broadcast views of v_0, b
    and 0, not copies; the native first step (``v0``) writes them at full size, and every value
    equals the eager neuron's (v_0 a calibrated per-position potential here, IF θ/2 in the
    signature test above)."""
    firsts = []
    real = native_steps.prepare
    monkeypatch.setattr(native_steps, "prepare", lambda *a: firsts.append(a[8] is not None) or real(*a))  # a[8]: v0
    theta = _theta()
    xs = _inputs(theta, frames=4)
    v_init = torch.rand(1, *SHAPE[1:], generator=torch.Generator().manual_seed(8))
    neurons = [SpikingNeuron(theta, rule="if", coding=coding, signed=True, floor=0.0, ceiling=6.0, fuse=fuse)
               for fuse in (False, True)]
    for neuron in neurons:
        neuron.set_corrections(v_init=v_init)
    eager, native = neurons
    if coding == "differential":
        with torch.inference_mode():
            native(xs[0].clone())
        assert native.initial_views and native.b.shape[0] == 1
        assert native.v.stride(0) == native.e_in.stride(0) == native.e_out.stride(0) == 0  # no copy
        assert torch.equal(native.v, v_init.expand(SHAPE)) and torch.equal(native.e_out, torch.zeros(SHAPE))
    firsts.clear()
    _assert_identical(_trace(eager, xs, True, True), _trace(native, xs, True, True))
    # the first step from the views, the next from the state (it leaves the plan that takes the rest:
    # tests/test_native_plan.py)
    assert firsts == [True, False]
    state = [native.v, native.e_in, native.e_out, native.c_out]
    assert all(a is None or (a.is_contiguous() and a.shape == SHAPE) for a in state) and not native.initial_views


def test_initial_views_another_step_reads_are_materialised_first(monkeypatch):
    """When the native step does not run after the bias pass (here: no kernel for it), the
    views become full tensors before the other step overwrites them; frame_state does the same."""
    theta = _theta()
    xs = _inputs(theta, frames=4)
    eager, fallback = (SpikingNeuron(theta, coding="differential", floor=0.0, fuse=fuse) for fuse in (False, True))
    with torch.inference_mode():
        fallback(xs[0].clone())
    assert fallback.initial_views
    state = fallback.frame_state()
    assert not fallback.initial_views and all(a.is_contiguous() and a.shape == SHAPE for a in state[1:])
    monkeypatch.setattr(native_steps, "kernel", lambda signature, affine=False: None)
    monkeypatch.setattr(fused, "compiled", _eager_kernel)  # no inductor compilation in this test
    _assert_identical(_trace(eager, xs, True, False), _trace(fallback, xs, True, False))


@pytest.mark.parametrize("where", ["first", "last", "none"])
def test_rows_equal_compares_every_sample_bit_for_bit(where):
    x = torch.randn(1, 3, 37).expand(5, 3, 37).contiguous()  # 111 floats a row: a vector tail too
    if where != "none":
        x[2 if where == "first" else 4].view(-1)[0 if where == "first" else -1] *= -1.0 if where == "first" else 1.5
    expected = where == "none"
    assert native_layout.rows_equal(x) is expected
    assert native_layout.rows_equal(x.transpose(1, 2)) is expected  # not contiguous: torch.equal
    zeros = torch.zeros(4, 8)
    zeros[3, 7] = -0.0
    assert not native_layout.rows_equal(zeros)  # -0.0 is not +0.0


def _attention_views(frames: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """q and kᵀ of a [batch, tokens, 3, heads, dim] projection, as attention permutes them."""
    g = torch.Generator().manual_seed(9)
    first = torch.randn(1, 5, 3, 2, 8, generator=g).expand(3, 5, 3, 2, 8).contiguous()
    qkvs = [first] + [torch.randn(3, 5, 3, 2, 8, generator=g) for _ in range(frames - 1)]
    return [(qkv.permute(2, 0, 3, 1, 4)[0], qkv.permute(2, 0, 3, 4, 1)[1]) for qkv in qkvs]


@pytest.mark.parametrize("coding", ["differential", "rate"])
@pytest.mark.parametrize("which", ["q", "kT", "3-d"])
def test_a_permuted_input_is_read_where_it_lies_bit_for_bit(coding, which, monkeypatch):
    """q (last dimension dense) goes to the native step uncopied; kᵀ is copied first; a 3-D
    transposed view too (its last dimension is not dense). Every output, count, hit and state
    equals the eager neuron's on the same views."""
    seen = []
    real = native_steps.prepare
    monkeypatch.setattr(native_steps, "prepare", lambda sig, x, *a: seen.append(x.is_contiguous()) or real(sig, x, *a))
    views = _attention_views(6)
    xs = [q if which == "q" else kt for q, kt in views]
    if which == "3-d":
        xs = [x.reshape(3, 2, 40).transpose(1, 2) for x in (q.contiguous() for q, _ in views)]
    theta = torch.full((1, xs[0].shape[1], 1, 1)[:xs[0].ndim], 0.6)
    eager, native = (SpikingNeuron(theta, coding=coding, rule="mt", n=4, signed=True, floor=None, fuse=fuse)
                     for fuse in (False, True))

    def trace(neuron):
        neuron.reset()
        neuron.count_spikes = neuron.count_positions = True
        with torch.inference_mode():
            out = [[neuron(x), neuron.last_counts, neuron.last_hits] for x in xs]
        return out + [[neuron.v, neuron.e_in, neuron.e_out]]

    _assert_identical(trace(eager), trace(native))
    copied = which != "q"
    # steps 1 and 2 take the full path (then the plan: tests/test_native_plan.py, which reads x
    # with the strides it was made for)
    if coding == "rate":  # the first step creates the state from a contiguous copy
        assert seen == [True, copied]
    else:  # the bias pass runs no step
        assert seen == [copied, copied]
    assert native._native_plan.strides == (xs[-1].stride() if not copied else xs[-1].contiguous().stride())


def test_the_native_step_reads_any_strides_of_four_dimensions():
    """The kernel's gathering loop (a last dimension that is not dense) equals the contiguous loop."""
    signature = fused.StepSignature.of("differential", "mt", 8, True, None, None, count=True, positions=True)
    _, kt = _attention_views(2)[1]
    theta = native_layout.row_layout(torch.full((1, 2, 1, 1), 0.4), kt)
    b = native_layout.row_layout(torch.randn(1, *kt.shape[1:]), kt)
    results = []
    for x in (kt, kt.contiguous()):
        state = [torch.full(kt.shape, 0.1), torch.full(kt.shape, 0.2), torch.zeros(kt.shape)]
        results.append([*native_steps.step(signature, x, b, *state, theta, 2.0), *state])
    assert not kt.is_contiguous() and kt.stride(-1) != 1
    _assert_identical([results[0]], [results[1]])


def _counted_product_trace(unit, xs, ys):
    unit.reset()
    unit.counting = True
    with torch.inference_mode():
        out = [[unit(x, y).clone(), unit.last_ops.clone()] for x, y in zip(xs, ys)]
    return out + [[*unit.acc, *(b.expand(a.shape) for b, a in zip(unit.base, unit.acc)), unit.last]]


def _same_sample_frames(shape, frames, seed):
    g = torch.Generator().manual_seed(seed)
    first = torch.randn(1, *shape[1:], generator=g).expand(shape).contiguous()
    return [first] + [torch.randn(shape, generator=g).clamp_min(0.2) - 0.2 for _ in range(frames - 1)]


def test_a_graded_bias_pass_keeps_b_as_one_sample_and_its_state_as_views():
    """Every sample's frame 0 the same: b is one sample, E and last are broadcast views, fn runs
    at the bias pass only until its output layout is known, and outputs, op counts and state
    equal the eager product unit's (which copies)."""
    xs, ys = _same_sample_frames((3, 5, 8), 6, 10), _same_sample_frames((3, 8, 4), 6, 11)
    fast, slow = (ProductUnit(torch.matmul, coding="differential", fuse=fuse) for fuse in (True, False))
    with torch.inference_mode():
        zeros = fast(xs[0], ys[0])
    assert torch.equal(zeros, torch.zeros(3, 5, 4)) and fast.initial_views
    assert [b.shape[0] for b in fast.base] == [1, 1] and all(a.stride(0) == 0 for a in [*fast.acc, fast.last])
    for _ in range(2):
        _assert_identical(_counted_product_trace(fast, xs, ys), _counted_product_trace(slow, xs, ys))
    shapes = []
    unit = GradedUnit(lambda a: shapes.append(a.shape) or F.gelu(a), coding="differential", fuse=True)
    for run in range(2):
        _graded_trace(unit, xs)
        assert len(shapes) == len(xs) - run  # the second run's bias pass did not evaluate fn
        shapes.clear()


@pytest.mark.parametrize("after", ["two threads", "frame_state"])
def test_graded_views_are_materialised_where_the_native_updates_do_not_run(after):
    xs = _same_sample_frames((3, 7, 12), 5, 12)
    fast, slow = (GradedUnit(GRADED_FUNCTIONS["layer_norm"], coding="differential", fuse=fuse) for fuse in (True, False))
    for unit in (fast, slow):
        with torch.inference_mode():
            unit(xs[0].clone())
    assert fast.initial_views and fast.base[0].shape[0] == 1
    if after == "two threads":
        torch.set_num_threads(2)
    else:
        state = fast.frame_state()
        assert all(a.is_contiguous() and a.shape == xs[0].shape for a in state)
    assert not fast.initial_views or after == "two threads"
    with torch.inference_mode():
        for x in xs[1:]:
            _assert_identical([[fast(x.clone())]], [[slow(x.clone())]])
    _assert_identical([[*fast.acc, *fast.base, fast.last]], [[*slow.acc, *slow.base, slow.last]])


def test_an_input_narrower_than_the_bias_pass_steps_from_materialised_views():
    """Frame 0 fixes the state's shape; a later input that broadcasts against it (one row) is not
    the native first step's case: the graded unit materialises its views and steps as eager."""
    xs = _same_sample_frames((3, 7, 12), 4, 13)
    narrow = [xs[0]] + [x[:1] for x in xs[1:]]
    fast, slow = (GradedUnit(F.gelu, coding="differential", fuse=fuse) for fuse in (True, False))
    _assert_identical(_graded_trace(fast, narrow), _graded_trace(slow, narrow))
    assert fast.acc[0].shape == xs[0].shape and not fast.initial_views


def test_theta_layout_per_channel_only_where_it_varies_along_the_channels():
    x = torch.zeros(SHAPE)
    per_channel = native_layout.channel_layout(_theta(), x)
    assert per_channel is not None and per_channel[1:] == (0, True)
    assert torch.equal(per_channel[0], _theta().reshape(-1))
    assert native_layout.channel_layout(_theta()[0], x) is not None  # [C, 1, 1]
    assert native_layout.channel_layout(torch.tensor(0.5), x)[0].tolist() == [0.5] * SHAPE[1]
    assert native_layout.channel_layout(torch.rand(1, *SHAPE[1:]), x) is None  # varies per position
    assert native_layout.channel_layout(torch.rand(SHAPE[0], SHAPE[1], 1, 1), x) is None  # varies per sample
    assert native_layout.channel_layout(torch.rand(1, 5), torch.zeros(3, 5)) is None  # two dimensions: rows


@pytest.mark.parametrize("coding,rule,n,signed,floor,ceiling", [s for s in SIGNATURES if s[3] and s[5] is None])
def test_per_position_theta_steps_bit_for_bit_by_the_row_loop(coding, rule, n, signed, floor, ceiling, monkeypatch):
    """θ that varies per position (not per channel) takes the row loop, θ per channel the hoisted
    one where the step counts positions (a spy on the flag the kernel gets): both equal the eager
    step, and without positions θ per channel stays a row."""
    flags = []
    step = native_steps.prepare
    monkeypatch.setattr(native_steps, "prepare", lambda sig, x, b, v, ei, eo, theta, *a: flags.append(len(theta) > 2)
                        or step(sig, x, b, v, ei, eo, theta, *a))
    for theta, hoisted in ((_theta() * (1 + torch.rand(1, 1, *SHAPE[2:], generator=torch.Generator().manual_seed(5))),
                            False), (_theta(), True)):
        xs = _inputs(theta)
        flags.clear()
        eager, native = (SpikingNeuron(theta, rule=rule, n=n, coding=coding, signed=signed, floor=floor,
                                       ceiling=ceiling, fuse=fuse) for fuse in (False, True))
        _assert_identical(_trace(eager, xs, True, True), _trace(native, xs, True, True))
        assert flags and set(flags) == {hoisted}
        flags.clear()
        _assert_identical(_trace(eager, xs, True, False), _trace(native, xs, True, False))
        assert flags and set(flags) == {False}


def test_per_channel_theta_on_a_strided_input_equals_the_contiguous_one():
    """The gathering loop with θ per channel (kᵀ of attention, one θ per head) equals the
    contiguous loop with the same θ as a row."""
    signature = fused.StepSignature.of("differential", "mt", 8, True, None, None, count=True, positions=True)
    _, kt = _attention_views(2)[1]
    theta = torch.tensor([0.4, 0.7]).view(1, 2, 1, 1)
    b = native_layout.row_layout(torch.randn(1, *kt.shape[1:]), kt)
    results = []
    per_head = (theta.reshape(-1).contiguous(), 0, True)  # channel_layout keeps strided inputs on rows
    assert native_layout.channel_layout(theta, kt) is None and native_layout.channel_layout(theta, kt.contiguous())
    for x, layout in ((kt, per_head), (kt.contiguous(), native_layout.row_layout(theta, kt))):
        state = [torch.full(kt.shape, 0.1), torch.full(kt.shape, 0.2), torch.zeros(kt.shape)]
        results.append([*native_steps.step(signature, x, b, *state, layout, 2.0), *state])
    _assert_identical([results[0]], [results[1]])
