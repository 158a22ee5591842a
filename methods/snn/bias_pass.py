"""Differential coding's bias pass (frame 0), replayed from a cache for every batch after the first.

Frame 0 feeds a zero image (docs/dcgs-official-code.md §2.1-2.2). Every unit emits zeros at
frame 0 (a neuron or graded unit only records its input as its bias b), so each unit's frame-0
input, and the network's frame-0 output y_0, depend on the connection layers' parameters and the
input's shape alone, never on the batch's values. The first batch of a shape runs the pass and
records each unit's input; a later batch replays only the units' first frames on the recorded
inputs (the same calls on the same values: the same state, bit for bit) and reuses y_0. A
replayed unit does not form its (zero) output, and derives its bias b from a recorded input once
(``StatefulUnit.replay_first_frame``). Every
convolution, linear layer and norm of frame 0 is skipped: T + 1 frames cost T frames plus the
state initialisation.

The cache is used only where that argument holds: every stateful module is an engine neuron,
graded or product unit (their frame 0 is a function of their input alone), every other module
is a library layer (torch, torchvision, timm; or a native pool of native_pool.py) in eval mode,
and nothing watches single modules but the op counter, which declares its hooks (``frame_zero_blind_hooks``) because it ignores
frame 0. It is keyed by the input's shape, dtype and device, the autograd mode and the
identity and version of every parameter and buffer outside the units (a unit's own buffers,
such as its threshold, do not change its frame-0 output, zeros, and the replay runs the unit
itself), so a calibration step or a loaded state runs the pass again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._pytree import tree_leaves, tree_map

from snnbench.methods.snn.frame import FUNCTIONAL_UNITS
from snnbench.methods.snn.graded import AnalogOp
from snnbench.methods.snn.native_pool import NATIVE_MODULES
from snnbench.methods.snn.units import StatefulUnit

#: packages whose layers are stateless in eval mode
LIBRARY_PACKAGES = ("torch.", "torchvision.", "timm.")


@dataclass
class _Entry:
    key: tuple
    tensors: list[torch.Tensor]
    versions: tuple[int, ...]
    modules: list[nn.Module]
    calls: list[tuple[StatefulUnit, tuple, dict]]
    output: Any

    def matches(self, key: tuple, tensors: list[torch.Tensor], modules: list[nn.Module]) -> bool:
        return (key == self.key and len(tensors) == len(self.tensors) and len(modules) == len(self.modules)
                and all(a is b for a, b in zip(tensors, self.tensors))
                and all(a is b for a, b in zip(modules, self.modules))
                and tuple(t._version for t in tensors) == self.versions)


def replayable(net: nn.Module, blind_hooks: int) -> bool:
    """Whether the frame-0 pass of ``net`` may be replayed (module docstring)."""
    from torch.nn.modules import module as module_globals

    if net.training or module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks:
        return False
    hooks = 0
    for module in net.modules():
        hooks += len(module._forward_hooks) + len(module._forward_pre_hooks)
        kind = type(module)
        if kind in FUNCTIONAL_UNITS or kind is AnalogOp or kind in NATIVE_MODULES:
            continue
        if isinstance(module, StatefulUnit) or not kind.__module__.startswith(LIBRARY_PACKAGES):
            return False
    return hooks == blind_hooks


def layer_tensors(net: nn.Module) -> list[torch.Tensor]:
    """The parameters and buffers of every module outside the units (the frame-0 inputs depend on these)."""
    inside: set[str] = set()
    tensors: list[torch.Tensor] = []
    for name, module in net.named_modules():
        if any(name.startswith(prefix) for prefix in inside):
            continue
        if isinstance(module, StatefulUnit):
            inside.add(name + ".")
            continue
        tensors.extend(module.parameters(recurse=False))
        tensors.extend(module.buffers(recurse=False))
    return tensors


#: the most bytes of recorded unit inputs a cache keeps (beyond it the pass runs every batch)
MAX_RECORDED_BYTES = 1 << 30


class BiasPassCache:
    """The recorded frame 0 of one input shape (see the module docstring). The recording holds
    a copy of every unit's frame-0 input; a network whose copy would exceed ``max_bytes`` runs
    its pass every batch."""

    def __init__(self, max_bytes: int = MAX_RECORDED_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entry: _Entry | None = None
        #: how the last pass ran: "computed", "replayed" or "not replayable" (tests, diagnostics)
        self.last = ""

    def clear(self) -> None:
        self._entry = None

    def run(self, net: nn.Module, zero: torch.Tensor, step: Callable[[torch.Tensor], Any], blind_hooks: int) -> Any:
        """The frame-0 output of ``net`` on ``zero`` (``step`` runs a frame), replayed when cached."""
        if not replayable(net, blind_hooks):
            self.last = "not replayable"
            return step(zero)
        tensors = layer_tensors(net)
        if any(t.is_inference() for t in tensors):  # no version counter: in-place changes are invisible
            self.last = "not replayable"
            return step(zero)
        modules = list(net.modules())
        key = (tuple(zero.shape), zero.dtype, zero.device, torch.is_grad_enabled(), torch.is_inference_mode_enabled())
        entry = self._entry
        if entry is not None and entry.matches(key, tensors, modules):
            for unit, args, kwargs in entry.calls:
                unit.replay_first_frame(*args, **kwargs)
            self.last = "replayed"
            return entry.output
        calls: list[tuple[StatefulUnit, tuple, dict]] = []

        def record(unit: nn.Module, args: tuple, kwargs: dict) -> None:
            copy = lambda v: v.clone() if isinstance(v, torch.Tensor) else v  # noqa: E731
            calls.append((unit, tree_map(copy, args), tree_map(copy, kwargs)))

        units = [m for m in modules if isinstance(m, StatefulUnit)]
        handles = [u.register_forward_pre_hook(record, with_kwargs=True) for u in units]
        try:
            output = step(zero)
        finally:
            for handle in handles:
                handle.remove()
        once = len(calls) == len(units) and len({id(unit) for unit, _, _ in calls}) == len(units)
        recorded = sum(v.numel() * v.element_size() for _, args, kwargs in calls
                       for v in tree_leaves((args, kwargs)) if isinstance(v, torch.Tensor))
        keep = once and recorded <= self.max_bytes
        self._entry = _Entry(key, tensors, tuple(t._version for t in tensors), modules, calls, output) if keep else None
        self.last = "computed"
        return output
