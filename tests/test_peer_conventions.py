"""Peer conventions as settings (issue 17 item 4): each non-default setting changes the
converted SNN, and the defaults are unchanged; hand traces for the IF neuron rules."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from snnbench.methods.base import ConversionContext
from snnbench.methods.dcgs import DCGS
from snnbench.methods.rate import RateCoding
from snnbench.methods.snn.neurons import SpikingNeuron
from snnbench.methods.snn.stats import collect_stats


def _cnn() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()


def _outputs(method, model, x, T=6):
    ctx = ConversionContext(T=T, example=x)
    snn = method.convert(model, collect_stats(model, [x], method.stat_kinds(model, ctx)), ctx)
    with torch.inference_mode():
        snn.reset()
        return torch.stack(list(snn.simulate(x, T)))


def test_if_v_init_trace_by_hand():
    x = torch.full((1,), 0.3)
    spikes = {}
    for v0 in ("half", "zero"):
        neuron = SpikingNeuron(torch.ones(1), rule="if", coding="rate", signed=False, floor=None, if_v_init=v0)
        spikes[v0] = [float(neuron(x)) for _ in range(4)]
    assert spikes["half"] == [0.0, 1.0, 0.0, 0.0]   # 0.5+0.3, 1.1 -> fire, 0.4, 0.7
    assert spikes["zero"] == [0.0, 0.0, 0.0, 1.0]   # 0.3, 0.6, 0.9, 1.2 -> fire


def test_if_negative_at_zero_trace_by_hand():
    # v0 = 0 and input 0: v = 0 exactly; only the v <= 0 rule fires -θ (no lower room limit)
    out = {}
    for rule in ("below_zero", "at_or_below_zero"):
        neuron = SpikingNeuron(torch.ones(1), rule="if", coding="rate", signed=True, floor=None,
                               if_v_init="zero", if_negative=rule)
        out[rule] = float(neuron(torch.zeros(1)))
    assert out == {"below_zero": 0.0, "at_or_below_zero": -1.0}


@pytest.mark.parametrize("method_cls,setting", [
    (RateCoding, {"if_v_init": "zero"}),
    (DCGS, {"neuron": "if", "if_negative": "at_or_below_zero", "if_v_init": "zero"}),
])
def test_if_settings_change_the_converted_snn(method_cls, setting):
    model = _cnn()
    torch.manual_seed(4)
    x = torch.rand(8, 1, 6, 6)
    base = {k: v for k, v in setting.items() if k == "neuron"}
    default = _outputs(method_cls(base), model, x)
    changed = _outputs(method_cls(setting), model, x)
    assert not torch.equal(default, changed)
    # the default really is the old behaviour (θ/2 and v < 0)
    explicit = _outputs(method_cls({**base, "if_v_init": "half", "if_negative": "below_zero"}), model, x)
    assert torch.equal(default, explicit)


def test_if_negative_alone_changes_a_differential_if_network():
    """Linear(1) -> ReLU -> Linear(1), unit weights, θ = max = 2, v_0 = 0, input 1, differential
    coding (Ē_out += s/t): t=1 m=1 (no spike); t=2 m=1+(1-0)=2 fires +2 (v=0, Ē_out=1); t=3
    m=0+(1-1)=0 with room 3·1 >= 2: the v <= 0 rule fires -2 (v=2, Ē_out=1-2/3=1/3), the v < 0
    rule does not; t=4 m=2+(1-1/3) fires +2 (Ē_out=1/3+2/4=5/6)."""
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.ReLU(), nn.Linear(1, 1, bias=False)).eval()
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.fill_(1.0)
    x = torch.tensor([[1.0], [2.0]])
    common = {"neuron": "if", "if_v_init": "zero", "threshold": "max", "granularity": "layer"}
    lt = _outputs(DCGS(common), model, x, T=4)[:, 0, 0]
    le = _outputs(DCGS({**common, "if_negative": "at_or_below_zero"}), model, x, T=4)[:, 0, 0]
    assert lt.tolist() == pytest.approx([0.0, 1.0, 1.0, 1.0])
    assert le.tolist() == pytest.approx([0.0, 1.0, 1 / 3, 5 / 6])


def test_signed_input_percentile_changes_transformer_thresholds():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=10, depth=1).eval()
    x = torch.randn(4, 3, 32, 32)
    thetas = {}
    for value in ("abs", "signed"):
        method = DCGS({"input_percentile_of": value})
        ctx = ConversionContext(T=4, example=x)
        kinds = method.stat_kinds(model, ctx)
        assert kinds[0].placement == "inputs"
        snn = method.convert(model, collect_stats(model, [x], kinds), ctx)
        thetas[value] = torch.cat([m.theta.flatten() for m in snn.modules() if isinstance(m, SpikingNeuron)])
    assert thetas["abs"].shape == thetas["signed"].shape
    assert (thetas["signed"] <= thetas["abs"] + 1e-6).all() and not torch.equal(thetas["abs"], thetas["signed"])


def test_calib_batch_size_and_eval_split_reach_the_cell(tmp_path):
    from snnbench.cli import build_cell, build_parser

    args = build_parser().parse_args(["run", "--method", "rate", "--task", "digits", "--model", "vgg_small",
                                      "--calib-batch-size", "7", "--calibrate-on-eval"])
    spec = build_cell(args)
    assert spec.calib_batch_size == 7 and spec.calib_split == "eval"
    plain = build_cell(build_parser().parse_args(["run", "--method", "rate", "--task", "digits", "--model",
                                                  "vgg_small"]))
    assert plain.calib_split == "train" and "calib_split" not in plain.canonical()
    assert spec.key() != plain.key()


@pytest.mark.slow
def test_calibration_on_eval_changes_statistics_and_is_marked():
    from snnbench.cell import CellSpec
    from snnbench.leaderboard.data import results_from_records
    from snnbench.leaderboard.rows import build_rows
    from snnbench.runner import run_cell

    common = dict(method="rate", task="digits", model="vgg_small", T=3, calib_size=60, eval_size=60)
    train = run_cell(CellSpec(**common))
    on_eval = run_cell(CellSpec(**common, calib_split="eval"))
    assert train["status"] == on_eval["status"] == "ok", (train["error"], on_eval["error"])
    assert train["per_t"]["3"]["spikes_per_sample"] != on_eval["per_t"]["3"]["spikes_per_sample"]
    rows = build_rows(results_from_records([train, on_eval])).rows
    labels = sorted(rows["label"])
    assert sum("[calibrated on eval]" in label for label in labels) == 1
