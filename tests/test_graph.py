"""Model surgery: normalisation of functional/shared activations, max-pool swap, sites,
clear errors for unsupported operations, and the user's model left untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from snnbench.methods.base import ConversionContext
from snnbench.methods.dcgs import DCGS
from snnbench.methods.snn.graded import GradedUnit
from snnbench.methods.snn.graph import build_network_graph
from snnbench.methods.snn.neurons import SpikingNeuron
from snnbench.methods.snn.operations import UnsupportedOperationError
from snnbench.methods.snn.stats import collect_stats


def convert(model, x, **settings):
    method = DCGS({"threshold": "max", **settings})
    ctx = ConversionContext(T=8, example=x)
    stats = collect_stats(model, [x], method.stat_kinds(model, ctx))
    return method.convert(model, stats, ctx)


def test_shared_relu_module_gets_one_neuron_per_call_site():
    model = torchvision.models.resnet18().eval()
    graph = build_network_graph(model, torch.randn(1, 3, 32, 32))
    names = [s.name for s in graph.sites]
    assert len(names) == len(set(names)) == 17  # stem + 8 basic blocks x 2
    assert "layer1.0.relu" in names and "layer1.0.relu__1" in names


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = torch.relu(x + 1) + x.relu()
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_functional_activations_become_neurons():
    model = Functional().eval()
    x = torch.randn(2, 3, 8, 8)
    snn = convert(model, x)
    neurons = [m for m in snn.modules() if isinstance(m, SpikingNeuron)]
    assert len(neurons) == 3
    snn.reset()
    out = list(snn.simulate(x, 32))[-1]
    with torch.no_grad():
        ref = model(x)
    assert torch.allclose(out, ref, atol=0.05 * ref.abs().max())


def test_maxpool_moves_in_front_of_relu():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3))
    graph = build_network_graph(model.eval(), torch.randn(1, 3, 8, 8))
    order = [n.target for n in graph.module.graph.nodes if n.op == "call_module"]
    assert order == ["0", "2", "1", "3", "4"]  # conv, pool, relu, flatten, fc
    assert graph.kinds[[n for n in graph.module.graph.nodes if n.target == "2"][0].name] == "graded"


def test_unsupported_operation_is_named():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, dim=1)

    with pytest.raises(UnsupportedOperationError, match="cumsum"):
        build_network_graph(Odd(), torch.randn(1, 3))


def test_user_model_is_not_modified():
    model = torchvision.models.resnet18().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    convert(model, torch.randn(2, 3, 32, 32))
    assert [type(m) for m in model.modules()] == types
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_transformer_like_models_get_input_placement():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(8)
            self.q = nn.Linear(8, 8)
            self.k = nn.Linear(8, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            h = self.norm(x)
            attn = (self.q(h) @ self.k(h).transpose(-2, -1)).softmax(dim=-1)
            return self.head((attn @ h).mean(1))

    x = torch.randn(2, 5, 8)
    graph = build_network_graph(Tiny().eval(), x)
    assert graph.placement == "inputs"
    kinds = sorted(graph.kinds[n] for n in graph.graded)
    assert kinds == ["graded", "graded", "product", "product"]
    snn = convert(Tiny().eval(), x, threshold="percentile", percentile=100.0, threshold_scale=1.0)
    assert any(isinstance(m, GradedUnit) and m.label == "matmul" for m in snn.modules())
