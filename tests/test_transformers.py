"""Transformers: timm ViT/DeiT conversion converges in both codings; graded and product
units are exact on hand-computed inputs; the official transformer recipe is the default."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

from snnbench.cell import CellSpec
from snnbench.methods.base import ConversionContext
from snnbench.methods.dcgs import DCGS
from snnbench.methods.rate import RateCoding
from snnbench.methods.snn.graded import GradedUnit, ProductUnit
from snnbench.methods.snn.graph import build_network_graph
from snnbench.methods.snn.neurons import SpikingNeuron
from snnbench.methods.snn.stats import collect_stats
from snnbench.runner import run_cell


def errors(model, x, method, steps=(4, 24)):
    ctx = ConversionContext(T=max(steps), example=x)
    snn = method.convert(model, collect_stats(model, [x], method.stat_kinds(model, ctx)), ctx)
    with torch.inference_mode():
        ref = model(x)
        snn.reset()
        return {t: float((o - ref).norm() / ref.norm()) for t, o in enumerate(snn.simulate(x, max(steps)), 1)
                if t in steps}


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_patch16_224", "vit_small_patch16_224"])
@pytest.mark.parametrize("coding", ["differential", "rate"])
def test_timm_vit_output_converges(name, coding):
    torch.manual_seed(0)
    model = timm.create_model(name, img_size=32, num_classes=10).eval()  # 2x2 patches + class token
    x = torch.randn(1, 3, 32, 32)
    err = errors(model, x, DCGS({"coding": coding, "threshold": "max", "threshold_scale": 1.0}))
    if coding == "differential":
        assert err[24] < 0.01 and err[24] < 0.1 * err[4], err
    else:
        assert err[24] < 0.4 * err[4], err


def test_transformer_recipe_defaults():
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    method = DCGS()
    graph = build_network_graph(model, x)
    resolved = method.resolved(graph)
    assert resolved == {"placement": "inputs", "granularity": "token", "threshold_scale": 8.0,
                        "threshold": "percentile"}
    ctx = ConversionContext(T=2, example=x)
    snn = method.convert(model, collect_stats(model, [x], method.stat_kinds(model, ctx)), ctx)
    neurons = [m for m in snn.modules() if isinstance(m, SpikingNeuron)]
    products = [m for m in snn.modules() if isinstance(m, ProductUnit)]
    graded = {m.label for m in snn.modules() if isinstance(m, GradedUnit)}
    # per block: qkv, proj, fc1, fc2 inputs + 2 operands x 2 products; plus patch embed and head
    assert len(neurons) == 12 * 8 + 2 and len(products) == 24
    assert {"layernorm", "softmax", "gelu", "matmul"} <= graded
    assert all(n.signed and n.floor is None for n in neurons)
    qkv_in = [n for n in neurons if n.theta.dim() == 3][0]
    assert qkv_in.theta.shape == (1, 5, 1)  # per token, as the official code computes it
    channel = DCGS({"granularity": "channel"})
    snn_c = channel.convert(model, collect_stats(model, [x], channel.stat_kinds(model, ctx)), ctx)
    shapes = {tuple(m.theta.shape) for m in snn_c.modules() if isinstance(m, SpikingNeuron)}
    assert (1, 1, 192) in shapes and (1, 1, 768) in shapes  # true per-channel for linear inputs


def test_graded_gelu_trace_by_hand():
    unit = GradedUnit(F.gelu, (0,), coding="differential")
    b = torch.tensor([0.5])
    assert unit(b).item() == 0.0                          # bias pass
    out1 = unit(torch.tensor([1.5]))                      # E_1 = 0.5 + 1.0 = 1.5
    assert out1.item() == pytest.approx(F.gelu(torch.tensor(1.5)).item(), abs=1e-7)
    out2 = unit(torch.tensor([-0.5]))                     # E_2 = 1.5 + (-1.0)/2 = 1.0
    assert out2.item() == pytest.approx(2 * (F.gelu(torch.tensor(1.0)) - F.gelu(torch.tensor(1.5))).item(), abs=1e-6)
    rate = GradedUnit(F.gelu, (0,), coding="rate")
    assert rate(torch.tensor([2.0])).item() == pytest.approx(F.gelu(torch.tensor(2.0)).item())
    # mean input (2 + 0)/2 = 1 -> out_2 = 2·gelu(1) - 1·gelu(2)
    assert rate(torch.tensor([0.0])).item() == pytest.approx(2 * 0.8413447 - 1.9544997, abs=1e-6)


def test_graded_softmax_trace_by_hand():
    unit = GradedUnit(torch.Tensor.softmax, (0,), coding="differential")
    unit(torch.tensor([[0.0, 0.0]]), dim=-1)
    out = unit(torch.tensor([[math.log(3.0), 0.0]]), dim=-1)   # softmax([ln 3, 0]) = [0.75, 0.25]
    assert torch.allclose(out, torch.tensor([[0.75, 0.25]]))
    out = unit(torch.tensor([[0.0, 0.0]]), dim=-1)             # E unchanged -> increment 0
    assert torch.equal(out, torch.zeros(1, 2))


def test_product_unit_trace_and_three_term_count_by_hand():
    unit = ProductUnit(torch.matmul, (0, 1), coding="differential", label="matmul")
    unit.counting = True
    a0, b0 = torch.zeros(1, 2), torch.zeros(2, 1)
    unit(a0, b0)
    a1, b1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0], [0.0]])
    out1 = unit(a1, b1)                      # A_1 B_1 = 2
    assert out1.item() == 2.0 and unit.last_ops.item() == 1  # a·b only: one pair of non-zeros
    a2, b2 = torch.tensor([[0.0, 4.0]]), torch.tensor([[0.0], [2.0]])
    out2 = unit(a2, b2)                      # A_2 = [1, 2], B_2 = [2, 1]: A_2 B_2 = 4 -> out = 2·(4 - 2)
    assert out2.item() == 4.0
    # a_2·b_2: 1 pair; a_2·B_1: a2 nz at k=1, B_1 nz at k=0 -> 0; A_1·b_2: A_1 nz k=0, b_2 nz k=1 -> 0
    assert unit.last_ops.item() == 1 and unit.last_dense == 2


def test_embedded_vit_converts_on_digits():
    result = run_cell(CellSpec(method="dcgs", task="digits", model="vit_mini", T=6, calib_size=300, eval_size=120))
    assert result["status"] == "ok", result["error"]
    assert result["per_t"]["6"]["metric"] >= result["ann"] - 0.03
    products = [layer for layer in result["layers"] if layer["type"] == "product"]
    assert len(products) == 8 and all(p["input"] == "spike" for p in products)
    rate = run_cell(CellSpec(method="rate", task="digits", model="vit_mini", T=6, calib_size=300, eval_size=120))
    assert rate["status"] == "ok" and rate["conversion"]["threshold_scale"] == 1.0
    assert isinstance(RateCoding().settings.threshold_scale, float)


@pytest.mark.parametrize("coding", ["differential", "rate"])
def test_matmul_op_count_fast_path_equals_indicator_matmuls(coding):
    """The O(size) count Σ_k colnnz(x)_k·rownnz(y)_k equals matmuls of indicator matrices."""
    torch.manual_seed(0)
    fast = ProductUnit(torch.matmul, (0, 1), coding=coding)
    slow = ProductUnit(lambda a, b: torch.matmul(a, b), (0, 1), coding=coding)  # not recognised as matmul
    fast.counting = slow.counting = True
    for _ in range(5):
        a = torch.randn(2, 3, 5, 7) * (torch.rand(2, 3, 5, 7) < 0.3)
        b = torch.randn(2, 3, 7, 4) * (torch.rand(2, 3, 7, 4) < 0.3)
        fast(a, b)
        slow(a, b)
        assert fast.last_ops.item() == slow.last_ops.item() and fast.last_dense == slow.last_dense == 2 * 3 * 5 * 7 * 4

