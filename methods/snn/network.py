"""The simulated spiking network: a graph of units stepped frame by frame.

Input frames and output decoding follow the coding (docs/dcgs-official-code.md §2.1, §2.9, §2.10):

* rate: the same analog input at t = 1..T; the estimate at t is the running mean of the
  outputs.
* differential: frame 0 is a zero input (the bias pass, whose output y_0 is the constant
  part of the network's affine tail), frame 1 the input, frames 2..T zero; the estimate
  is E_t = y_0 + Σ_{τ<=t} (y_τ - y_0)/τ.

Outputs may be tensors or nested dicts/lists/tuples of tensors (detection heads); they are
decoded leaf by leaf. State lives in the units, so memory does not grow with T.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Literal

import torch
import torch.fx as fx
from torch import nn
from torch.utils._pytree import tree_map

from snnbench.methods.base import ConnectionSite, CountPlan, Fairness, NeuronSite, SpikingModel
from snnbench.methods.snn.bias_pass import BiasPassCache
from snnbench.methods.snn.frame import FrameRunner, observed, structural_obstacle
from snnbench.methods.snn.graded import AnalogOp, GradedUnit, ProductUnit
from snnbench.methods.snn.neurons import SpikingNeuron
from snnbench.methods.snn.operations import CONNECTION_MODULES, CONV_MODULES
from snnbench.methods.snn.units import reset_units

#: ops through which a spike train stays a spike train (pure data movement)
SPIKE_PRESERVING_METHODS = {"view", "reshape", "flatten", "permute", "transpose", "contiguous", "unsqueeze",
                            "squeeze", "chunk", "split", "unbind", "narrow", "unflatten", "movedim", "swapaxes"}
SPIKE_PRESERVING_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)


class SimulatedNetwork(SpikingModel):
    """A converted network (an fx.GraphModule holding units) plus its coding."""

    #: forward hooks on the graph's modules that ignore frame 0 (the op counter declares its
    #: own): with no other hooks, the bias pass may be replayed (bias_pass.py)
    frame_zero_blind_hooks: int = 0

    def __init__(self, net: fx.GraphModule, coding: Literal["rate", "differential"],
                 description: dict[str, Any] | None = None) -> None:
        super().__init__()
        if coding not in ("rate", "differential"):
            raise ValueError(f"coding must be 'rate' or 'differential', got {coding!r}")
        self.net = net
        self.coding = coding
        self._description = dict(description or {})
        #: run every frame after the first as one compiled graph (methods/snn/frame.py) when the
        #: network allows it; the engine sets this from its ``compile_frame`` setting
        self.compile_frame = False
        self._frame_runner: FrameRunner | None = None
        self._frame_obstacle: str | None = None
        #: differential coding's frame 0, recorded once per input shape and replayed (bias_pass.py)
        self.bias_pass = BiasPassCache()
        self.cache_bias_pass = True

    def reset(self) -> None:
        reset_units(self.net)
        self.frame = 0

    def step(self, frame: torch.Tensor) -> Any:
        """One frame through the network (advances every unit by one step): the compiled
        functional frame when ``compile_frame`` is on and nothing watches single modules,
        unit by unit otherwise (and always for the first frame, which creates the state)."""
        runner = self.frame_runner() if self.compile_frame else None
        if runner is not None and not observed(self.net):
            out = runner(frame)
            if out is not None:
                return out
        return self.net(frame)

    def frame_runner(self) -> FrameRunner | None:
        """The compiled-frame runner of this network, or None where its graph cannot run as a
        functional frame (``frame_obstacle`` says why)."""
        if self._frame_runner is None and self._frame_obstacle is None:
            self._frame_obstacle = structural_obstacle(self.net) if isinstance(self.net, fx.GraphModule) else (
                "not an fx graph")
            if self._frame_obstacle is None:
                self._frame_runner = FrameRunner(self.net)
        return self._frame_runner

    def __getstate__(self) -> dict[str, Any]:
        # copies and pickles drop the runner (compiled functions bound to this graph); it is rebuilt on use
        state = dict(self.__dict__)
        state["_frame_runner"] = state["_frame_obstacle"] = None
        state["bias_pass"] = BiasPassCache()
        return state

    @property
    def frame_obstacle(self) -> str | None:
        """Why the compiled frame is not used for this network's graph (None: it can be)."""
        self.frame_runner()
        return self._frame_obstacle

    def simulate(self, x: torch.Tensor, T: int) -> Iterator[Any]:
        if self.coding == "rate":
            estimate = None
            for t in range(1, T + 1):
                self.frame = t
                y = self.step(x)
                estimate = y if estimate is None else tree_map(lambda e, v, t=t: e + (v - e) / t, estimate, y)
                yield estimate
            return
        zero = torch.zeros_like(x)
        self.frame = 0
        if self.cache_bias_pass:
            bias = self.bias_pass.run(self.net, zero, self.step, self.frame_zero_blind_hooks)
        else:
            bias = self.step(zero)
        estimate = bias
        for t in range(1, T + 1):
            self.frame = t
            y = self.step(x if t == 1 else zero)
            estimate = tree_map(lambda e, v, b, t=t: e + (v - b) / t, estimate, y, bias)
            yield estimate

    # -- counting ------------------------------------------------------------------------
    def count_plan(self) -> CountPlan:
        gm = self.net
        kinds_by_module: dict[str, set[str]] = {}
        pools: dict[str, set[nn.Module | None]] = {}
        direct: dict[str, set[nn.Module | None]] = {}
        for node in gm.graph.nodes:
            if node.op != "call_module":
                continue
            module = gm.get_submodule(node.target)
            if isinstance(module, CONNECTION_MODULES) and node.args and isinstance(node.args[0], fx.Node):
                spike, pool = spike_source(gm, node.args[0])
                kinds_by_module.setdefault(node.target, set()).add("spike" if spike else "analog")
                pools.setdefault(node.target, set()).add(pool)
                direct.setdefault(node.target, set()).add(
                    direct_spike_module(gm, node.args[0], reshapes=not isinstance(module, CONV_MODULES)))
        for node in gm.graph.nodes:
            if node.op == "call_module" and _is_product(gm.get_submodule(node.target)):
                unit = gm.get_submodule(node.target)
                operands = [node.args[i] for i in unit.dynamic]
                spiking = all(isinstance(a, fx.Node) and spike_source(gm, a) == (True, None) for a in operands)
                kinds_by_module[node.target] = {"spike" if spiking else "analog"}
                pools[node.target] = {None}
        connections = []
        for target, kinds in kinds_by_module.items():
            module = gm.get_submodule(target)
            op = "conv" if isinstance(module, CONV_MODULES) else "product" if _is_product(module) else "linear"
            spike = kinds == {"spike"} and len(pools[target]) == 1
            pool = next(iter(pools[target])) if spike else None
            sources = direct.get(target, {None})
            source = next(iter(sources)) if spike and pool is None and len(sources) == 1 else None
            connections.append(ConnectionSite(target, module, "spike" if spike else "analog", op=op, events_from=pool,
                                              spikes_from=source))
        neurons = [NeuronSite(name, m, unit=m.unit_amplitude) for name, m in gm.named_modules() if is_spiking(m)]
        return CountPlan(connections=connections, neurons=neurons, first_counted_frame=1)

    def fairness(self) -> Fairness:
        """Differential coding reads out after its bias pass (1 frame before step 1); the
        neurons emit one level per step: an n-level MT neuron 0 or ±θ/2^k (k < n), i.e.
        2n + 1 values signed, n + 1 unsigned, at most 2^(n-1) unit spikes (the top level);
        an IF neuron 0 or ±θ (3 values signed, 2 unsigned: 1 bit), one unit spike. The
        network's figures are the largest over its neurons."""
        neurons = [m for m in self.net.modules() if isinstance(m, SpikingNeuron)]
        levels, spikes = 0.0, 0
        for m in neurons:
            per_sign = m.n if m.rule == "mt" else 1
            levels = max(levels, math.log2(1 + per_sign * (2 if m.signed else 1)))
            spikes = max(spikes, 2 ** (m.n - 1) if m.rule == "mt" else 1)
        return Fairness(frames_before_readout=1 if self.coding == "differential" else 0,
                        levels_per_step=levels if neurons else 0.0, max_spikes_per_step=spikes)

    def describe(self) -> dict[str, Any]:
        neurons = [m for m in self.net.modules() if is_spiking(m)]
        graded = [m for m in self.net.modules() if isinstance(m, GradedUnit)]
        out = dict(self._description)
        out.update(coding=self.coding, neurons=len(neurons), graded_units=len(graded),
                   graded_ops=sorted({g.label for g in graded}))
        return out


def is_spiking(module: nn.Module) -> bool:
    """Whether ``module`` emits spikes: an engine :class:`SpikingNeuron` or any unit that declares
    ``emits_spikes = True`` (and a ``unit_amplitude()``), e.g. the H-MT neuron."""
    return isinstance(module, SpikingNeuron) or bool(getattr(module, "emits_spikes", False))


def _is_product(module: nn.Module) -> bool:
    return isinstance(module, ProductUnit) or (isinstance(module, AnalogOp) and module.product)


POOL_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                nn.AdaptiveAvgPool3d)
RESHAPE_METHODS = {"view", "reshape", "flatten", "contiguous"}
RESHAPE_MODULES = (nn.Flatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)


IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)


def direct_spike_module(gm: fx.GraphModule, node: fx.Node, reshapes: bool) -> nn.Module | None:
    """The spiking neuron whose output ``node`` is, unchanged: through identity/dropout
    modules and ``contiguous``, and with ``reshapes`` also through flatten/view/reshape
    (which keep every element, so the counts of non-zero values are the neuron's)."""
    for _ in range(64):
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            if isinstance(module, SpikingNeuron):
                return module
            if isinstance(module, IDENTITY_MODULES) or (reshapes and isinstance(module, nn.Flatten)):
                node = node.args[0]
                continue
            return None
        if node.op == "call_method" and (node.target == "contiguous" or (reshapes and node.target in RESHAPE_METHODS)):
            node = node.args[0]
            continue
        name = getattr(node.target, "__name__", "")
        if node.op == "call_function" and reshapes and name in ("flatten", "reshape"):
            node = node.args[0]
            continue
        return None
    return None


def spike_source(gm: fx.GraphModule, node: fx.Node) -> tuple[bool, nn.Module | None]:
    """Whether ``node`` carries spikes of neurons, and the average pool they pass through.

    Walks back through data movement (reshapes, permutes, slicing, concatenation of spike
    trains) and at most one average pool; between that pool and the layer only reshapes
    are allowed, so the pool's spike counts can be laid onto the layer's input.
    """
    pool: nn.Module | None = None
    reshape_only = True  # ops seen so far (between the layer and the pool) only reshape
    for _ in range(64):
        name = getattr(node.target, "__name__", str(node.target))
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            if is_spiking(module):
                return True, pool
            if isinstance(module, POOL_MODULES) and pool is None and reshape_only:
                pool = module
                node = node.args[0]
                continue
            if isinstance(module, SPIKE_PRESERVING_MODULES):
                reshape_only &= isinstance(module, RESHAPE_MODULES)
                node = node.args[0]
                continue
            return False, None
        if node.op == "call_method" and node.target in SPIKE_PRESERVING_METHODS:
            reshape_only &= node.target in RESHAPE_METHODS
            node = node.args[0]
            continue
        if node.op == "call_function" and name in ("getitem", "flatten", "reshape"):
            reshape_only &= name != "getitem"
            node = node.args[0]
            continue
        if node.op == "call_function" and name in ("cat", "concat", "stack") and pool is None:
            parts = node.args[0]
            ok = all(isinstance(p, fx.Node) and spike_source(gm, p) == (True, None) for p in parts)
            return ok, None
        return False, None
    return False, None
