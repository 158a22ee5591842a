"""The QCFS activation (quantization-clip-floor-shift; Bu et al., ICLR 2022, Eq. 12-13;
docs/baseline-methods.md §5), the ANN side of the QCFS track.

A leaf module (torch only): the trained QCFS architectures of ``snnbench.tasks.zoo`` build
with it and the ``qcfs``/``srp`` conversions read its λ, so neither layer imports the other.

    h(x) = λ · clip( floor(x·L/λ + 1/2) / L, 0, 1 )

λ is a trainable per-layer threshold (parameter ``up``, the official code's name, so a
checkpoint trained with it loads), L the number of quantization levels (an attribute,
not part of the state dict: the official checkpoints do not store it). The floor is a
straight-through estimator in training (gradient 1).

An IF neuron with threshold θ = λ, reset by subtraction and initial potential θ/2 run
for T = L steps on a constant input reproduces h exactly (the paper's Theorem 2: with the
shift 1/2 the expected conversion error is zero), which tests/test_qcfs_srp.py checks.

The helpers turn a plain network into its QCFS variant: every ReLU becomes a QCFS
activation and every max-pool an average pool (the official ``utils.py`` does both; the
replacement changes the ANN, and the model spec records it).
"""

from __future__ import annotations

import torch
from torch import nn

#: the official code's initial λ (``QCFS(up=8.)``)
DEFAULT_INITIAL_THRESHOLD = 8.0
#: L on small data sets (the paper's CIFAR setting, SRP's ``--L 4``)
DEFAULT_LEVELS = 4


class _FloorStraightThrough(torch.autograd.Function):
    """floor in the forward pass, identity gradient in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """floor(x) with a straight-through gradient."""
    return _FloorStraightThrough.apply(x)


class QCFS(nn.Module):
    """QCFS activation h(x) = λ·clip(floor(x·L/λ + 1/2)/L, 0, 1) with trainable λ (``up``).

    Args:
        levels: L, the number of quantization steps of [0, λ].
        initial_threshold: λ at initialisation (and after ``reset_parameters``).
    """

    def __init__(self, levels: int = DEFAULT_LEVELS, initial_threshold: float = DEFAULT_INITIAL_THRESHOLD) -> None:
        super().__init__()
        if int(levels) < 1:
            raise ValueError(f"QCFS needs L >= 1 quantization levels, got {levels}")
        self.levels = int(levels)
        self.initial_threshold = float(initial_threshold)
        self.up = nn.Parameter(torch.tensor([self.initial_threshold]))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.up.fill_(self.initial_threshold)

    def threshold(self) -> torch.Tensor:
        """λ as a detached scalar tensor (the SNN threshold θ of this layer)."""
        return self.up.detach().reshape(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lam = self.up
        steps = floor_ste(x * self.levels / lam + 0.5)
        return lam * torch.clamp(steps / self.levels, 0.0, 1.0)

    def extra_repr(self) -> str:
        return f"L={self.levels}, lambda={float(self.up.detach().reshape(-1)[0]):.4g}"


def replace_relu_with_qcfs(model: nn.Module, levels: int = DEFAULT_LEVELS,
                           initial_threshold: float = DEFAULT_INITIAL_THRESHOLD) -> int:
    """Replace every ``nn.ReLU`` module of ``model`` (in place) by a fresh :class:`QCFS`; returns the count.

    Functional ReLUs (``F.relu`` in a forward) are not modules and stay ReLUs: the
    conversion then sees a plain ReLU site and the QCFS methods refuse the model.
    """
    count = 0
    for name, child in list(model.named_children()):
        if isinstance(child, nn.ReLU):
            setattr(model, name, QCFS(levels, initial_threshold))
            count += 1
        else:
            count += replace_relu_with_qcfs(child, levels, initial_threshold)
    return count


def replace_maxpool_with_avgpool(model: nn.Module) -> int:
    """Replace every ``nn.MaxPool2d`` (in place) by an ``nn.AvgPool2d`` of the same window; returns the count."""
    count = 0
    for name, child in list(model.named_children()):
        if isinstance(child, nn.MaxPool2d):
            setattr(model, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                              ceil_mode=child.ceil_mode))
            count += 1
        else:
            count += replace_maxpool_with_avgpool(child)
    return count


def qcfs_thresholds(model: nn.Module) -> dict[str, float]:
    """λ of every QCFS activation of ``model`` by module path."""
    return {name: float(m.threshold()) for name, m in model.named_modules() if isinstance(m, QCFS)}
