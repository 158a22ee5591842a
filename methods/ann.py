"""``ann``: the identity conversion, the reference row of every leaderboard.

The ANN is evaluated once per batch and its output is reported at every t, with its
dense multiply-accumulates (every connection layer fed by real values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from methods.base import ConnectionSite, ConversionContext, ConversionMethod, CountPlan, SpikingModel


@dataclass(frozen=True)
class ANNSettings:
    """The reference has no settings."""


class StaticModel(SpikingModel):
    """Wraps an ANN: computed once per batch, the same output at every t."""

    static = True

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def reset(self) -> None:
        self.frame = 0

    def simulate(self, x: torch.Tensor, T: int) -> Iterator[Any]:
        self.frame = 1
        out = self.model(x)
        for _ in range(T):
            yield out

    def count_plan(self) -> CountPlan:
        sites = []
        for name, module in self.model.named_modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                sites.append(ConnectionSite(name, module, "analog", op="conv"))
            elif isinstance(module, nn.Linear):
                sites.append(ConnectionSite(name, module, "analog", op="linear"))
        return CountPlan(connections=sites, neurons=[], first_counted_frame=1)


class ANNReference(ConversionMethod[ANNSettings]):
    """The ANN itself (identity conversion): the reference row of every leaderboard."""

    name = "ann"
    version = "1"
    settings_cls = ANNSettings

    def convert(self, model: nn.Module, stats: Any, ctx: ConversionContext) -> SpikingModel:
        return StaticModel(model)
