"""The native average pool (methods/snn/native_pool.py): bit-identical to torch's kernel on values
where the summation order shows, used only where it applies, swapped into converted graphs only."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snnbench.methods.snn import native_pool, native_steps


@pytest.fixture(autouse=True)
def one_thread(native_loops):
    """Every test here runs with the native loops on one torch thread (conftest.native_loops)."""
    yield


def _bits(a: torch.Tensor) -> torch.Tensor:
    return a.contiguous().view(torch.int32)


def _adversarial(shape: tuple[int, ...]) -> torch.Tensor:
    """Values whose sum depends on the order of the adds: magnitudes from 1e-8 to 1e8, exact
    cancellations, signed zeros, spike-like multiples of a power of two."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=g) * torch.exp(torch.randn(shape, generator=g) * 8)
    flat = x.view(-1, *shape[-2:])
    flat[0, :2, :4] = torch.tensor([[1e8, 1.0, -1e8, 1.0], [1e8, 1.0, -1e8, 1.0]])  # ((a+b)+c)+d != (a+c)+(b+d)
    flat[0, 2:4, 0:2] = -0.0  # all -0.0: +0.0 + -0.0 = +0.0, as torch's sum starts at +0.0
    flat[-1] = torch.randint(-3, 4, flat[-1].shape, generator=g).float() * 0.125
    return x


CASES = [(2, 2, (3, 5, 8, 8)), (2, 2, (2, 3, 7, 9)), (3, 2, (2, 4, 11, 10)), (3, 1, (2, 2, 9, 7)),
         ((2, 3), (1, 2), (2, 3, 8, 12)), (5, 5, (1, 2, 5, 5)), (2, 2, (4, 8, 6))]


@pytest.mark.parametrize("kernel,stride,shape", CASES)
def test_native_pool_equals_torch_bit_for_bit(kernel, stride, shape, monkeypatch):
    x = _adversarial(shape)
    pool = nn.AvgPool2d(kernel, stride)
    native = native_pool.NativeAvgPool2d.of(pool)
    calls = []
    loop = native_pool._loop(native_pool._pair(kernel), native_pool._pair(stride))
    assert loop is not None
    monkeypatch.setattr(native_pool, "_loop", lambda *a: calls.append(a) or loop)
    with torch.inference_mode():
        got, want = native(x), pool(x)
    assert calls, "the native loop did not run"
    assert got.shape == want.shape
    assert torch.equal(_bits(got), _bits(want))


def test_divisor_override_and_a_hand_computed_window():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    native = native_pool.NativeAvgPool2d(2, 2, divisor_override=3)
    with torch.inference_mode():
        got = native(x)
    # window (0,0): 0 + 1 + 4 + 5 = 10, divided by 3
    assert got[0, 0, 0, 0].item() == pytest.approx(10 / 3)
    assert torch.equal(_bits(got), _bits(F.avg_pool2d(x, 2, 2, divisor_override=3)))


@pytest.mark.parametrize("why,pool,x", [
    ("padding", nn.AvgPool2d(2, 2, padding=1), torch.randn(2, 3, 6, 6)),
    ("ceil mode", nn.AvgPool2d(3, 2, ceil_mode=True), torch.randn(2, 3, 6, 6)),
    ("channels last", nn.AvgPool2d(2), torch.randn(2, 3, 6, 6).contiguous(memory_format=torch.channels_last)),
    ("float64", nn.AvgPool2d(2), torch.randn(2, 3, 6, 6, dtype=torch.float64)),
    ("window larger than the input", nn.AvgPool2d(3), torch.randn(2, 3, 2, 6)),
])
def test_torch_kernel_runs_where_the_loop_does_not_apply(why, pool, x, monkeypatch):
    native = native_pool.NativeAvgPool2d.of(pool)
    monkeypatch.setattr(native_pool, "_loop", lambda *a: pytest.fail(f"native loop used despite {why}"))
    if why == "window larger than the input":
        with pytest.raises(RuntimeError):
            pool(x)
        with pytest.raises(RuntimeError):
            native(x)
        return
    assert torch.equal(native(x), pool(x))


def test_torch_kernel_with_autograd_two_threads_or_native_off(monkeypatch):
    pool = native_pool.NativeAvgPool2d(2)
    monkeypatch.setattr(native_pool, "_loop", lambda *a: pytest.fail("native loop used"))
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    y = pool(x)
    y.sum().backward()  # torch's kernel: the gradient flows
    assert x.grad is not None and torch.equal(x.grad, torch.full_like(x, 0.25))
    torch.set_num_threads(2)
    assert not native_pool.pool_usable(pool, x.detach())
    torch.set_num_threads(1)
    monkeypatch.setenv(native_steps.NATIVE_ENV, "0")
    assert not native_pool.pool_usable(pool, x.detach())


def test_a_failed_build_warns_once_and_gives_torch_values(monkeypatch, caplog):
    def refuse(code):
        raise RuntimeError("no C compiler (test)")

    monkeypatch.setattr(native_steps, "_build", refuse)
    pool = native_pool.NativeAvgPool2d(2)
    x = torch.randn(2, 3, 6, 6)
    with caplog.at_level(logging.WARNING, logger=native_pool.__name__):
        first, second = pool(x), pool(x)
    assert torch.equal(first, F.avg_pool2d(x, 2)) and torch.equal(second, first)
    assert sum("could not be built" in r.getMessage() for r in caplog.records) == 1


def _max_adversarial(shape: tuple[int, ...]) -> torch.Tensor:
    """Ties of -0.0 and +0.0 in both orders (torch keeps the first in row-major order), NaNs,
    -inf, repeated maxima and windows clipped by padding."""
    g = torch.Generator().manual_seed(11)
    x = torch.randint(-2, 3, shape, generator=g).float() * 0.5  # many exact ties
    flat = x.view(-1, *shape[-2:])
    zeros = torch.randint(0, 2, flat[0].shape, generator=g).bool()
    flat[0] = torch.where(zeros, torch.tensor(-0.0), torch.tensor(0.0)) - (torch.rand(flat[0].shape, generator=g) < 0.3) * 1.0
    flat[1, 1, 1] = float("nan")
    flat[1, -1, -1] = float("-inf")
    flat[-1] = float("-inf")
    return x


MAX_CASES = [((3, 2, 1), (2, 4, 12, 12)), ((3, 2, 1), (2, 3, 11, 9)), ((2, 2, 0), (2, 3, 8, 8)),
             ((3, 1, 1), (1, 3, 7, 6)), (((3, 2), (2, 1), (1, 0)), (2, 3, 9, 8)), ((3, 2, 0), (2, 3, 9, 9)),
             ((3, 2, 1, 1, False, True), (2, 3, 10, 11)), ((2, 2, 0, 1, False, True), (2, 3, 7, 9)),
             ((5, 3, 2), (1, 2, 5, 4)), ((3, 2, 1), (3, 6, 6))]


@pytest.mark.parametrize("args,shape", MAX_CASES)
def test_native_max_pool_equals_torch_bit_for_bit(args, shape, monkeypatch):
    pool = nn.MaxPool2d(*args)
    native = native_pool.NativeMaxPool2d.of(pool)
    x = _max_adversarial(shape)
    with torch.inference_mode():
        assert native_pool.max_pool2d(native, x) is not None, "the native loop does not apply"
        got, want = native(x), pool(x)
    assert got.shape == want.shape
    assert torch.equal(_bits(got), _bits(want))


def test_max_pool_tie_of_signed_zeros_keeps_the_first_by_hand():
    x = torch.tensor([[[[-0.0, 0.0], [0.0, -1.0]]], [[[0.0, -0.0], [-0.0, -1.0]]]])
    with torch.inference_mode():
        got = native_pool.NativeMaxPool2d(2)(x)
    assert torch.equal(_bits(got.reshape(-1)), _bits(torch.tensor([-0.0, 0.0])))


def test_torch_max_pool_runs_for_indices_and_dilation(monkeypatch):
    monkeypatch.setattr(native_pool, "_loop", lambda *a: pytest.fail("native loop used"))
    x = torch.randn(2, 3, 8, 8)
    for pool in (nn.MaxPool2d(2, return_indices=True), nn.MaxPool2d(3, 1, dilation=2)):
        native = native_pool.NativeMaxPool2d.of(pool)
        got, want = native(x), pool(x)
        assert all(torch.equal(a, b) for a, b in zip(got, want)) if isinstance(want, tuple) else torch.equal(got, want)


def test_install_swaps_only_plain_avg_pools_and_keeps_their_settings():
    class Custom(nn.AvgPool2d):
        pass

    shared = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(3, 2, divisor_override=5),
                          nn.Sequential(nn.ReLU(), nn.AvgPool2d(2)), Custom(2), nn.AdaptiveAvgPool2d(1), shared)
    model.holder = nn.Module()
    model.holder.fn = shared  # one module at two paths (as a graded unit holds its max pool)
    model[1].eval()
    assert native_pool.install(model) == 3
    assert type(model[1]) is native_pool.NativeAvgPool2d and type(model[2][1]) is native_pool.NativeAvgPool2d
    assert type(model[3]) is Custom and type(model[4]) is nn.AdaptiveAvgPool2d
    assert (model[1].kernel_size, model[1].stride, model[1].divisor_override) == (3, 2, 5)
    assert isinstance(model[1], nn.AvgPool2d) and not model[1].training
    assert type(model[5]) is native_pool.NativeMaxPool2d and model.holder.fn is model[5]
    assert (model[5].kernel_size, model[5].stride, model[5].padding, model[5].ceil_mode) == (3, 2, 1, True)


def test_conversion_swaps_the_snn_pools_and_leaves_the_ann_alone(monkeypatch):
    from snnbench.methods.base import ConversionContext
    from snnbench.methods.snn.graded import GradedUnit
    from snnbench.methods.snn.network import SimulatedNetwork
    from snnbench.methods.snn.stats import collect_stats
    from snnbench.plugins import create_method

    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1), nn.Conv2d(4, 4, 3, padding=1),
                        nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    x = torch.rand(4, 1, 16, 16)
    method = create_method("dcgs", {})
    ctx = ConversionContext(T=4, example=x, device=x.device, calib_batches=lambda: iter([x]))
    snn = method.convert(ann, collect_stats(ann, [x], method.stat_kinds(ann, ctx)), ctx)
    assert isinstance(snn, SimulatedNetwork)
    assert [type(m) for m in snn.net.modules() if isinstance(m, nn.AvgPool2d)] == [native_pool.NativeAvgPool2d]
    graded = [m for m in snn.net.modules() if isinstance(m, GradedUnit)]
    assert [type(m.fn) for m in graded] == [native_pool.NativeMaxPool2d]  # the max pool is a graded unit's function
    assert all(type(m) in (nn.AvgPool2d, nn.MaxPool2d) for m in ann.modules() if isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)))
    loops = {"avg_pool2d": native_pool.avg_pool2d, "max_pool2d": native_pool.max_pool2d}
    ran = []

    def counted(name):
        def run(module, x):
            y = loops[name](module, x)
            ran.append((name, y is not None))
            return y
        return run

    outputs = {}
    for mode in ("native", "torch"):  # the native loops on and off: the same estimates bit for bit
        for name in loops:
            monkeypatch.setattr(native_pool, name, counted(name) if mode == "native" else (lambda module, x: None))
        with torch.inference_mode():
            snn.reset()
            outputs[mode] = [y.clone() for y in snn.simulate(x, 4)]
    assert {name for name, used in ran if used} == set(loops) and all(used for _, used in ran)
    assert all(torch.equal(_bits(a), _bits(b)) for a, b in zip(outputs["native"], outputs["torch"]))
