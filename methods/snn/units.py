"""The stateful base of every unit that replaces an ANN operation in a spiking network.

Every unit is stepped once per frame, keeps its state in itself (SpikingJelly's
``register_memory`` habit: state with a reset value, created at the input's shape on the
first step), and is reset between batches. Two codings (docs/dcgs-official-code.md §2):

* **rate**: the same analog frame at every step t = 1..T; the decoded value of any
  tensor is the running mean of its frames.
* **differential**: frame 0 is the *bias pass* (a zero image) and frames t >= 1 carry
  increments; every unit records its frame-0 input as its bias b and emits 0 at frame 0,
  so each unit's decoded input is E_t = b + Σ_{τ<=t} (x_τ - b)/τ (docs/dcgs-official-code.md
  §2.1-2.2).

The units themselves: spiking neurons in :mod:`snnbench.methods.snn.neurons`, graded and
product units (and the ANN reference's stateless stand-in) in :mod:`snnbench.methods.snn.graded`.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Literal

import torch
from torch import nn

Coding = Literal["rate", "differential"]


#: attributes a unit rebinds at every step besides its state (plain values, never parameters,
#: buffers or submodules)
STEP_ATTRIBUTES = frozenset({"t", "last_counts", "last_hits", "last_ops", "last_dense"})
#: the value types that may take the plain-attribute shortcut of :meth:`StatefulUnit.__setattr__`
_PLAIN_TYPES = (torch.Tensor, int, float, bool, list, tuple, type(None))


class StatefulUnit(nn.Module):
    """Base of units with per-batch state. ``t`` counts frames since the last reset."""

    def __init__(self) -> None:
        super().__init__()
        self._state_names: list[str] = []
        self._plain_names: set[str] = set(STEP_ATTRIBUTES) | {"initial_views"}
        self.t = 0
        #: whether the state is still broadcast views of its initial values, which the unit's
        #: first native step reads and replaces (neurons.py, graded.py); cleared by :meth:`reset`
        self.initial_views = False

    def __setattr__(self, name: str, value: Any) -> None:
        """The state and the per-step attributes (:data:`STEP_ATTRIBUTES`) are plain attributes
        rebound several times per step; they skip ``nn.Module.__setattr__``'s registry checks
        (parameters, buffers, submodules), which cost ~1-2 µs per assignment. Anything else, and
        any value that is not exactly a plain type (a Parameter, a Module), takes the normal path."""
        members = self.__dict__
        plain = members.get("_plain_names")
        if plain is not None and name in plain and type(value) in _PLAIN_TYPES and name not in members["_parameters"] \
                and name not in members["_buffers"] and name not in members["_modules"]:
            members[name] = value  # exactly what nn.Module.__setattr__ does for such a value
        else:
            super().__setattr__(name, value)

    def register_state(self, name: str) -> None:
        """Declare a state tensor (``None`` until the first step creates it)."""
        self._state_names.append(name)
        self._plain_names.add(name)
        setattr(self, name, None)

    def reset(self) -> None:
        for name in self._state_names:
            setattr(self, name, None)
        self.t = 0
        self.initial_views = False

    def replay_first_frame(self, *args: Any, **kwargs: Any) -> None:
        """Frame 0 again, on the inputs the bias pass cache recorded for this unit
        (methods/snn/bias_pass.py), which already holds the frame's output: sets the state
        :meth:`forward` sets. A unit may skip forming its output (zeros) and derive what depends
        on the recorded inputs alone once (:meth:`_recorded`)."""
        self(*args, **kwargs)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_replay_cache", None)  # weak references pickle not; a copy derives again
        return state

    def _recorded(self, inputs: list[torch.Tensor], derive: Callable[[], list[torch.Tensor]]) -> list[torch.Tensor]:
        """``derive()`` for these recorded inputs, computed once: kept with weak references to
        the inputs and their versions (an inference tensor keeps none: the cache's own copies,
        which nothing writes), so a new recording derives it again. Its tensors are read by the
        steps, never written (the bias b)."""
        versions = tuple(0 if x.is_inference() else x._version for x in inputs)
        cached = self.__dict__.get("_replay_cache")
        if cached is not None and len(cached[0]) == len(inputs) and cached[1] == versions \
                and all(ref() is x for ref, x in zip(cached[0], inputs)):
            return cached[2]
        values = derive()
        self.__dict__["_replay_cache"] = ([weakref.ref(x) for x in inputs], versions, values)
        return values

    # -- the functional step (frames after the first; methods/snn/frame.py) ----------------
    def frame_state(self) -> tuple[torch.Tensor, ...]:
        """The state tensors :meth:`frame_step` threads, in its order (after the first frame)."""
        raise NotImplementedError

    def frame_step(self, t: torch.Tensor | int, state: tuple[torch.Tensor, ...], /, *args: Any, **kwargs: Any
                   ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One frame t after the first as a pure function: ``(inputs, state, t) -> (output, new
        state)``, no mutation, no data-dependent Python control flow (t may be a 0-dim tensor)."""
        raise NotImplementedError

    def advance(self, state: tuple[torch.Tensor, ...]) -> None:
        """Store the state a :meth:`frame_step` returned and advance the clock by one frame."""
        raise NotImplementedError


_STEP_SCALARS: dict[tuple, torch.Tensor] = {}


def step_scalar(t: int | float) -> torch.Tensor:
    """The time-step as the 0-dim CPU tensor the compiled steps take (``torch.tensor(float(t))``),
    made once per value, default dtype and inference mode (an inference tensor cannot enter
    autograd) instead of once per unit and step (~3 µs each). Never mutated by its users."""
    key = (float(t), torch.get_default_dtype(), torch.is_inference_mode_enabled())
    scalar = _STEP_SCALARS.get(key)
    if scalar is None:
        if len(_STEP_SCALARS) > 4096:
            _STEP_SCALARS.clear()
        scalar = _STEP_SCALARS[key] = torch.tensor(float(t))
    return scalar


def reset_units(model: nn.Module) -> None:
    """Reset every :class:`StatefulUnit` in ``model`` (between batches)."""
    for module in model.modules():
        if isinstance(module, StatefulUnit):
            module.reset()
