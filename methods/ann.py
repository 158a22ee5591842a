"""``ann``: the identity conversion, the reference row of every leaderboard.

The ANN is evaluated once per batch and its output is reported at every t: the method is
flagged ``reference`` (:class:`~snnbench.methods.base.ConversionMethod`), so the harness
reuses the ANN evaluation it already made instead of simulating :class:`StaticModel` again.
Its dense multiply-accumulates are counted on the traced graph, so products of two signals
(attention's q·kᵀ and attn·v) are in the ANN's cost as well as conv and linear layers.
Models that cannot be traced fall back to counting their conv and linear modules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from snnbench.methods.base import (ConnectionSite, ConversionContext, ConversionMethod, CountPlan, Fairness,
                                   SpikingModel)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ANNSettings:
    """The reference has no settings."""


class StaticModel(SpikingModel):
    """Wraps an ANN (or its traced graph): computed once per batch, the same output at every t."""

    static = True

    def __init__(self, model: nn.Module, plan: CountPlan | None = None) -> None:
        super().__init__()
        self.model = model
        self._plan = plan

    def reset(self) -> None:
        self.frame = 0

    def fairness(self) -> Fairness:
        """One frame, no spikes; a float32 activation carries 32 bits per step."""
        return Fairness(frames_before_readout=0, levels_per_step=32.0, max_spikes_per_step=0)

    def simulate(self, x: torch.Tensor, T: int) -> Iterator[Any]:
        self.frame = 1
        out = self.model(x)
        for _ in range(T):
            yield out

    def count_plan(self) -> CountPlan:
        if self._plan is not None:
            return self._plan
        sites = []
        for name, module in self.model.named_modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                sites.append(ConnectionSite(name, module, "analog", op="conv"))
            elif isinstance(module, nn.Linear):
                sites.append(ConnectionSite(name, module, "analog", op="linear"))
        return CountPlan(connections=sites, neurons=[], first_counted_frame=1)


def traced_reference(model: nn.Module, example: torch.Tensor) -> StaticModel:
    """The ANN as a traced graph whose products count their dense MACs."""
    from snnbench.methods.snn.graph import network_graph
    from snnbench.methods.snn.network import SimulatedNetwork
    from snnbench.methods.snn.graded import AnalogOp

    # any placement gives the same function and MACs; "auto" shares the conversion's graph
    graph = network_graph(model, example, placement="auto")
    gm, _ = graph.instantiate(site_unit=None, graded_unit=lambda node, fn, positions, label: AnalogOp(
        fn, positions, label, product=graph.kinds[node.name] == "product"))
    plan = SimulatedNetwork(gm, "rate").count_plan()
    for site in plan.connections:
        site.input_kind = "analog"
        site.events_from = None
    return StaticModel(gm.eval(), plan)


class ANNReference(ConversionMethod[ANNSettings]):
    """The ANN itself (identity conversion): the reference row of every leaderboard."""

    name = "ann"
    version = "1"
    settings_cls = ANNSettings
    reference = True  # the harness reuses its cached ANN evaluation at every t

    def convert(self, model: nn.Module, stats: Any, ctx: ConversionContext) -> SpikingModel:
        if ctx.example is not None:
            try:
                return traced_reference(model, ctx.example)
            except Exception as err:  # noqa: BLE001 - untraceable models still get a reference
                log.info("ANN reference falls back to module hooks (%s)", err)
        return StaticModel(model)
