"""The op counter's one-pass read of a layer input (bench/input_census.py): compiled and eager give
the counts of the direct definitions, per position and in total."""

from __future__ import annotations

import pytest
import torch

from snnbench import input_census as census


@pytest.fixture(autouse=True)
def _compile_small_inputs(monkeypatch):
    monkeypatch.setattr(census, "MIN_ELEMENTS", 0)


def sparse_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Zeros, ±1, values near 1 and -0.0 mixed."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    pick = torch.rand(shape, generator=g)
    x = torch.where(pick < 0.5, torch.zeros_like(x), x)
    x = torch.where((pick > 0.5) & (pick < 0.6), torch.sign(x), x)
    x = torch.where((pick > 0.6) & (pick < 0.62), torch.full_like(x, -0.0), x)
    x = torch.where((pick > 0.62) & (pick < 0.64), torch.full_like(x, torch.nextafter(torch.tensor(1.0),
                                                                                        torch.tensor(2.0)).item()), x)
    return x


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("shape", [(4, 3, 7, 5), (2, 5, 1, 1), (1, 1, 9, 9), (3, 4, 6)])
def test_census_per_position_equals_the_definitions(shape, compiled):
    x = sparse_input(shape, seed=sum(shape))
    hits, ones = census.input_census(x, per_position=True, compiled=compiled)
    assert hits.dtype == torch.int64 and tuple(hits.shape) == shape[2:]
    assert torch.equal(hits, (x != 0).sum(dim=(0, 1)))
    assert int(ones) == int((x.abs() == 1).sum()) > 0


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("shape", [(8, 300), (1, 17), (5,)])
def test_census_total_equals_the_definitions(shape, compiled):
    x = sparse_input(shape, seed=len(shape) + shape[0])
    nonzero, ones = census.input_census(x, per_position=False, compiled=compiled)
    assert int(nonzero) == int(torch.count_nonzero(x))
    assert int(ones) == int((x.abs() == 1).sum())


def test_census_counts_eagerly_once_compilation_fails(monkeypatch, caplog):
    def broken(name, fn):
        raise RuntimeError("no toolchain")

    monkeypatch.setattr(census, "_compiled", broken)
    monkeypatch.setattr(census, "_FAILED", set())
    x = sparse_input((4, 3, 5, 5), seed=3)
    with caplog.at_level("WARNING", logger="snnbench.input_census"):
        hits, ones = census.input_census(x, per_position=True, compiled=True)
        census.input_census(x, per_position=True, compiled=True)
    assert torch.equal(hits, (x != 0).sum(dim=(0, 1))) and int(ones) == int((x.abs() == 1).sum())
    assert sum("input census failed" in r.message for r in caplog.records) == 1


@pytest.fixture
def native_census(native_loops):
    """One torch thread with the native loops on (conftest.native_loops), the census library
    forgotten before and after."""
    census.clear_compiled()
    yield
    census.clear_compiled()


@pytest.mark.parametrize("shape", [(4, 3, 7, 5), (2, 5, 1, 1), (1, 1, 9, 9), (3, 4, 6), (64, 16, 14, 14)])
def test_native_census_per_position_equals_the_definitions(native_census, monkeypatch, shape):
    calls = []
    monkeypatch.setattr(census, "_compiled", lambda *a: calls.append("compiled"))  # must not be reached
    x = sparse_input(shape, seed=sum(shape))
    x.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -1.0])  # NaN: non-zero, |x| != 1
    assert census.native_usable(x.reshape(shape[0] * shape[1], -1))
    hits, ones = census.input_census(x, per_position=True, compiled=True)
    assert not calls and hits.dtype == torch.int64 and tuple(hits.shape) == shape[2:]
    assert torch.equal(hits, (x != 0).sum(dim=(0, 1)))
    assert int(ones) == int((x.abs() == 1).sum()) > 0


def test_native_census_counts_by_hand(native_census):
    # rows [0, -0.0, 1, nan] and [-1, 2, 0, 0.5] per position: 1, 1, 1, 2 non-zeros; ±1 twice
    x = torch.tensor([[[[0.0, -0.0], [1.0, float("nan")]], [[-1.0, 2.0], [0.0, 0.5]]]])
    hits, ones = census.input_census(x, per_position=True, compiled=True)
    assert hits.tolist() == [[1, 1], [1, 2]] and int(ones) == 2
    nonzero, ones = census.input_census(x, per_position=False, compiled=True)
    assert int(nonzero) == 5 and int(ones) == 2


@pytest.mark.parametrize("shape", [(8, 300), (1, 17), (5,), (64, 4, 17, 24)])
def test_native_census_total_equals_the_definitions(native_census, shape):
    x = sparse_input(shape, seed=len(shape) + shape[0])
    nonzero, ones = census.input_census(x, per_position=False, compiled=True)
    assert int(nonzero) == int(torch.count_nonzero(x)) and int(ones) == int((x.abs() == 1).sum())


def test_native_census_reads_a_strided_input_through_its_copy(native_census):
    x = sparse_input((6, 5, 4, 8), seed=11).transpose(2, 3)  # not contiguous: reshape copies it
    hits, ones = census.input_census(x, per_position=True, compiled=True)
    assert torch.equal(hits, (x != 0).sum(dim=(0, 1))) and int(ones) == int((x.abs() == 1).sum())


def test_native_census_steps_aside(native_census, monkeypatch):
    """Eager runs, several threads, other dtypes and SNNBENCH_NATIVE=0 never take the loop."""
    from snnbench.methods.snn import native_steps

    taken = []
    real = census.native_census
    monkeypatch.setattr(census, "native_census", lambda *a: taken.append(1) or real(*a))
    x = sparse_input((4, 3, 5, 5), seed=5)
    census.input_census(x, per_position=True, compiled=False)
    census.input_census(x.double(), per_position=True, compiled=True)
    torch.set_num_threads(2)
    census.input_census(x, per_position=True, compiled=True)
    torch.set_num_threads(1)
    monkeypatch.setenv(native_steps.NATIVE_ENV, "0")
    hits, _ = census.input_census(x, per_position=True, compiled=True)
    assert not taken and torch.equal(hits, (x != 0).sum(dim=(0, 1)))
    monkeypatch.delenv(native_steps.NATIVE_ENV)
    census.input_census(x, per_position=True, compiled=True)
    assert taken == [1]


def test_native_census_that_cannot_be_built_warns_once(native_census, monkeypatch, caplog):
    from snnbench.methods.snn import native_steps

    def no_compiler(code):
        raise RuntimeError("no C compiler")

    monkeypatch.setattr(native_steps, "_build", no_compiler)
    x = sparse_input((4, 3, 5, 5), seed=3)
    with caplog.at_level("WARNING", logger="snnbench.input_census"):
        hits, ones = census.input_census(x, per_position=True, compiled=True)
        census.input_census(x, per_position=True, compiled=True)
    assert torch.equal(hits, (x != 0).sum(dim=(0, 1))) and int(ones) == int((x.abs() == 1).sum())
    assert sum("native input census could not be built" in r.message for r in caplog.records) == 1
