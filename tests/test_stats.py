"""Calibration statistics: one pass, exact pooled moments, percentile semantics, grid search."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snnbench.methods.snn.stats import StatKind, collect_stats, mse_grid_search


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
