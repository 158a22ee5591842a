"""Calibration statistics: one pass, exact pooled moments, percentile semantics, grid search."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snnbench.methods.snn.stats import StatKind, as_rows, batch_moments, collect_stats, mse_grid_search


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1, bias=True)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


@pytest.fixture
def model_and_batches():
    torch.manual_seed(0)
    model = TwoLayer().eval()
    batches = [torch.randn(8, 2, 4, 4) for _ in range(3)]
    return model, batches


def test_moments_are_exact_pooled_pre_activation_statistics(model_and_batches):
    model, batches = model_and_batches
    kind = StatKind("moments", granularity="channel")
    stats = collect_stats(model, batches, [kind])
    with torch.no_grad():
        pre = torch.cat([model.conv(b) for b in batches])  # [24, 3, 4, 4]
    rows = pre.transpose(0, 1).reshape(3, -1)
    got = stats.site(kind, "relu")
    assert got["mean"].shape == (1, 3, 1, 1)
    assert torch.allclose(got["mean"].flatten(), rows.mean(1), atol=1e-6)
    assert torch.allclose(got["var"].flatten(), rows.var(1, unbiased=False), atol=1e-5)


def test_percentile_is_batch_weighted_mean_of_batch_quantiles(model_and_batches):
    model, batches = model_and_batches
    kind = StatKind("percentile", granularity="layer", p=99.0)
    stats = collect_stats(model, batches, [kind])
    with torch.no_grad():
        qs = [torch.quantile(torch.relu(model.conv(b)).flatten(), 0.99) for b in batches]
    assert stats.site(kind, "relu")["value"].item() == pytest.approx(float(sum(qs) / 3), rel=1e-6)


def test_percentile_nonzero_scope_ignores_zeros(model_and_batches):
    model, batches = model_and_batches
    all_kind = StatKind("percentile", granularity="layer", p=50.0, scope="all")
    nz_kind = StatKind("percentile", granularity="layer", p=50.0, scope="nonzero")
    stats = collect_stats(model, batches[:1], [all_kind, nz_kind])
    with torch.no_grad():
        post = torch.relu(model.conv(batches[0])).flatten()
    assert stats.site(all_kind, "relu")["value"].item() == pytest.approx(torch.quantile(post, 0.5).item(), abs=1e-6)
    assert stats.site(nz_kind, "relu")["value"].item() == pytest.approx(torch.quantile(post[post > 0], 0.5).item(),
                                                                        abs=1e-6)


def test_max_and_channelwise_shapes(model_and_batches):
    model, batches = model_and_batches
    kind = StatKind("max", granularity="channel")
    stats = collect_stats(model, batches, [kind])
    with torch.no_grad():
        post = torch.cat([torch.relu(model.conv(b)) for b in batches])
    assert torch.equal(stats.site(kind, "relu")["value"].flatten(), post.amax(dim=(0, 2, 3)))


def test_input_placement_sites_sit_in_front_of_layers(model_and_batches):
    model, batches = model_and_batches
    kind = StatKind("max", granularity="layer", placement="inputs")
    stats = collect_stats(model, batches, [kind])
    sites = stats.get_kind(kind)
    assert set(sites) == {"x", "flatten"}  # the image (conv input) and the fc input
    assert sites["x"]["value"].item() == pytest.approx(torch.cat(batches).abs().max().item())


def test_mse_grid_search_finds_minimiser():
    torch.manual_seed(3)
    rows = torch.relu(torch.randn(2, 20000)) * torch.tensor([[1.0], [3.0]])
    rows[1, 0] = 60.0  # one outlier: clipping it is better than stretching the grid
    levels = 8
    best = mse_grid_search(rows, levels)
    for r in range(2):
        top = rows[r].max()
        cands = top * (1 - 0.01 * torch.arange(95))

        def mse(theta):
            q = torch.floor((rows[r] / theta * levels).clamp(0, levels)) * theta / levels
            return ((rows[r] - q) ** 2).mean()

        errs = torch.stack([mse(c) for c in cands])
        assert best[r].item() == pytest.approx(cands[errs.argmin()].item(), rel=1e-6)
    assert best[1] < 30.0


@pytest.mark.parametrize("axis", [None, 1, 2])
def test_batch_moments_in_float32_agree_with_the_float64_two_pass_formula(axis):
    """Per batch one float32 var_mean, pooled in float64: within 1e-6 relative of the float64
    two-pass mean and sum of squared deviations, also with a large offset and many values."""
    torch.manual_seed(0)
    x = torch.randn(64, 16, 30, 30) * 0.3 + 5.0
    x[:, 3] *= 40.0
    mean, m2, count = batch_moments(x, axis)
    rows = as_rows(x, axis).double()
    ref_mean = rows.mean(1)
    ref_m2 = ((rows - ref_mean[:, None]) ** 2).sum(1)
    assert count == rows.shape[1] and mean.dtype == torch.float64
    assert ((mean - ref_mean).abs() / ref_mean.abs()).max() < 1e-6
    assert ((m2 - ref_m2).abs() / ref_m2).max() < 1e-6


def test_pooled_moments_over_batches_within_1e6_of_float64_over_all_values():
    torch.manual_seed(1)
    model = TwoLayer().eval()
    batches = [torch.randn(50, 2, 4, 4) * 3 + 1 for _ in range(4)]
    kind = StatKind("moments", granularity="channel")
    got = collect_stats(model, batches, [kind]).site(kind, "relu")
    with torch.no_grad():
        rows = torch.cat([model.conv(b) for b in batches]).transpose(0, 1).reshape(3, -1).double()
    assert ((got["mean"].flatten().double() - rows.mean(1)).abs() / rows.mean(1).abs()).max() < 1e-6
    ref_var = rows.var(1, unbiased=False)
    assert ((got["var"].flatten().double() - ref_var).abs() / ref_var).max() < 1e-6


def test_network_graph_is_built_once_per_model_and_rebuilt_after_an_edit(model_and_batches):
    from snnbench.methods.snn import graph as graph_module

    model, batches = model_and_batches
    before = graph_module.GRAPH_BUILDS["count"]
    first = graph_module.network_graph(model, batches[0], "auto")
    assert graph_module.network_graph(model, batches[1][:3], "activations") is first  # batch size ignored
    assert graph_module.GRAPH_BUILDS["count"] == before + 1
    with torch.no_grad():
        model.conv.weight.mul_(2.0)  # in-place edit: the traced copy is stale
    second = graph_module.network_graph(model, batches[0], "auto")
    assert second is not first and graph_module.GRAPH_BUILDS["count"] == before + 2
    assert torch.equal(second.module.conv.weight, model.conv.weight)
