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
def one_thread(tmp_path_factory, monkeypatch):
    """The native pool runs on one torch thread; loops are built into a per-session directory."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv(native_steps.DIR_ENV, str(tmp_path_factory.getbasetemp() / "native"))
    monkeypatch.delenv(native_steps.NATIVE_ENV, raising=False)
    native_pool.clear()
    yield
    native_pool.clear()
    torch.set_num_threads(threads)


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


def test_install_swaps_only_plain_avg_pools_and_keeps_their_settings():
    class Custom(nn.AvgPool2d):
        pass

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(3, 2, divisor_override=5),
                          nn.Sequential(nn.ReLU(), nn.AvgPool2d(2)), Custom(2), nn.AdaptiveAvgPool2d(1))
    model[1].eval()
    assert native_pool.install(model) == 2
    assert type(model[1]) is native_pool.NativeAvgPool2d and type(model[2][1]) is native_pool.NativeAvgPool2d
    assert type(model[3]) is Custom and type(model[4]) is nn.AdaptiveAvgPool2d
    assert (model[1].kernel_size, model[1].stride, model[1].divisor_override) == (3, 2, 5)
    assert isinstance(model[1], nn.AvgPool2d) and not model[1].training


def test_conversion_swaps_the_snn_pools_and_leaves_the_ann_alone(monkeypatch):
    from snnbench.methods.base import ConversionContext
    from snnbench.methods.snn.network import SimulatedNetwork
    from snnbench.methods.snn.stats import collect_stats
    from snnbench.plugins import create_method

    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                        nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    x = torch.rand(4, 1, 16, 16)
    method = create_method("dcgs", {})
    ctx = ConversionContext(T=4, example=x, device=x.device, calib_batches=lambda: iter([x]))
    snn = method.convert(ann, collect_stats(ann, [x], method.stat_kinds(ann, ctx)), ctx)
    assert isinstance(snn, SimulatedNetwork)
    kinds = [type(m) for m in snn.net.modules() if isinstance(m, nn.AvgPool2d)]
    assert kinds == [native_pool.NativeAvgPool2d] * 2
    assert all(type(m) is nn.AvgPool2d for m in ann.modules() if isinstance(m, nn.AvgPool2d))
    native_loop = native_pool.avg_pool2d
    ran = []

    def counted(module, x):
        y = native_loop(module, x)
        ran.append(y is not None)
        return y

    outputs = {}
    for mode, loop in (("native", counted), ("torch", lambda module, x: None)):  # the same estimates bit for bit
        monkeypatch.setattr(native_pool, "avg_pool2d", loop)
        with torch.inference_mode():
            snn.reset()
            outputs[mode] = [y.clone() for y in snn.simulate(x, 4)]
    assert ran and all(ran)
    assert all(torch.equal(_bits(a), _bits(b)) for a, b in zip(outputs["native"], outputs["torch"]))
