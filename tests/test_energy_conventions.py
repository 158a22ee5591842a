"""Energy conventions (issue 17 items 2 and 5): on a fixed, seeded small CNN the
``dcgs-official``, ``neurobench`` and ``adafire-official`` ratios equal independent
hand-written counters implementing those tools' definitions (forward hooks on the
converted network's Conv2d/Linear, written here from dcgs.md §5.2-5.3 and baselines.md
§4, §9.3, never calling snnbench.counting); the published-constant models follow their
formula; unknown names list the valid ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snnbench.counting import OpCounter
from snnbench.energy import ENERGY_MODELS, EnergyInputs, get_energy_model
from snnbench.methods.base import ConversionContext
from snnbench.methods.dcgs import DCGS
from snnbench.methods.rate import RateCoding
from snnbench.methods.snn.stats import collect_stats

E_AC, E_MAC = 0.9, 4.6


def fixed_cnn() -> nn.Module:
    """conv -> ReLU -> avg pool -> conv (stride 2) -> ReLU -> global avg pool -> linear."""
    torch.manual_seed(17)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 5)).eval()


class HandCounters:
    """The three tools' op counts, from each Conv2d/Linear call of the converted network.

    Frame index = call number within the batch (differential coding's first call is the
    bias pass, excluded as the official counter excludes it)."""

    def __init__(self, snn: nn.Module, differential: bool) -> None:
        self.first_frame = 1 if differential else 0
        self.calls: dict[int, int] = {}
        self.sop = 0.0                      # DCGS: Σ conv(1[x != 0], ones) over frames >= 1
        self.dense = 0.0                    # DCGS/NeuroBench: one frame of conv(ones, ones)
        self.nb_acs = self.nb_macs = 0.0    # NeuroBench: binarised input and weights, no bias
        self.ada = 0.0                      # AdaFire: E per its Energy()
        self.ada_dense = 0.0
        self.frames = 0
        self.order: list[int] = []
        layers = [m for m in snn.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        self.handles = [m.register_forward_hook(self.hook) for m in layers]

    def new_batch(self) -> None:
        self.calls = {}

    def hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        x = args[0].double()
        index = self.calls.get(id(module), 0)
        self.calls[id(module)] = index + 1
        if index < self.first_frame:
            return
        if id(module) not in self.order:
            self.order.append(id(module))
        w_ones = (module.weight != 0).double()
        if isinstance(module, nn.Conv2d):
            run = lambda inp: F.conv2d(inp, w_ones, None, module.stride, module.padding,  # noqa: E731
                                       module.dilation, module.groups)
            macs_ungrouped = output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        else:
            run = lambda inp: F.linear(inp, w_ones)  # noqa: E731
            macs_ungrouped = output.numel() * module.in_features
        effective = float(run((x != 0).double()).sum())
        self.sop += effective
        if ((x == 0) | (x.abs() == 1)).all():
            self.nb_acs += effective
        else:
            self.nb_macs += effective
        if index == self.first_frame:
            self.dense += float(run(torch.ones_like(x)).sum())
            self.ada_dense += macs_ungrouped
        if self.order[0] == id(module):
            self.ada += E_MAC * macs_ungrouped
        else:
            self.ada += E_AC * macs_ungrouped * float((x != 0).sum()) / x.numel()

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("method", [DCGS({"n": 4}), DCGS({"n": 8}), RateCoding()], ids=["dcgs-n4", "dcgs-n8", "rate"])
def test_conventions_equal_hand_written_tool_counters(method):
    model = fixed_cnn()
    torch.manual_seed(1)
    batches = [torch.rand(6, 1, 12, 12) for _ in range(2)]
    T = 5
    ctx = ConversionContext(T=T, example=batches[0])
    snn = method.convert(model, collect_stats(model, batches, method.stat_kinds(model, ctx)), ctx).eval()
    differential = method.settings.coding == "differential"
    hand = HandCounters(snn, differential)
    with torch.inference_mode(), OpCounter(snn, T) as counter:
        for x in batches:
            snn.reset()
            hand.new_batch()
            list(snn.simulate(x, T))
            counter.add_samples(x.shape[0])
        summary = counter.summary()
    hand.close()
    inputs = EnergyInputs(layers=summary.layers, neuron_updates=summary.neuron_updates,
                          ann_dense_macs=summary.dense_macs, T=T)
    got = {name: ENERGY_MODELS[name].ratio_at(inputs, T) for name in ENERGY_MODELS}
    n = sum(x.shape[0] for x in batches)
    assert hand.dense / n == pytest.approx(summary.dense_macs, rel=1e-12)
    assert got["dcgs-official"] == pytest.approx(E_AC * hand.sop / (E_MAC * hand.dense), rel=1e-12)
    assert got["neurobench"] == pytest.approx((E_AC * hand.nb_acs + E_MAC * hand.nb_macs) / (E_MAC * hand.dense),
                                              rel=1e-12)
    assert got["adafire-official"] == pytest.approx(hand.ada / (E_MAC * hand.ada_dense), rel=1e-12)
    # the conventions really differ here: first layer priced as MACs, spikes behind the pools
    assert got["horowitz45nm-v1"] != pytest.approx(got["dcgs-official"], rel=1e-3)
    if differential:  # θ-amplitude multi-level spikes: NeuroBench labels every op a MAC
        assert hand.nb_acs == 0 and got["neurobench"] > got["dcgs-official"]
    acs_macs = summary.acs[T - 1] + summary.macs[T - 1]
    for name in ("loihi-published", "spinnaker2-prototype-published"):
        m = ENERGY_MODELS[name]
        assert m.kind == "published-constant estimate" and "measured" not in m.kind
        expected = (acs_macs * m.e_synop_pj + summary.neuron_updates[T - 1] * m.e_neuron_update_pj) / (
            summary.dense_macs * E_MAC)
        assert got[name] == pytest.approx(expected, rel=1e-12)


def test_unknown_energy_model_lists_valid_names():
    with pytest.raises(ValueError, match="valid: horowitz45nm-v1, dcgs-official, neurobench"):
        get_energy_model("dcgs_oficial")
