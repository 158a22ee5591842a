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
