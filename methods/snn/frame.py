"""A whole frame of a converted network as one compiled graph (BENCHMARKS.md §8).

The per-unit path steps every unit as its own module call: on a small transformer (vit_mini:
~20 graded and product units per block plus the neurons, on 64x17x96 activations) the cost
is per-op dispatch and one memory pass per small op, not arithmetic. Here the converted
``fx.GraphModule`` is rewritten into a *functional frame*::

    forward(frame, t, *states) -> (output, *new_states)

in which every unit call becomes a call of the unit's pure functional step
(:meth:`~snnbench.methods.snn.units.StatefulUnit.frame_step`: inputs, state tensors and the
frame number t as a 0-dim tensor in; output and new state out; no mutation), and the whole
frame goes through ``torch.compile`` once per input shape, so inductor fuses across units
(the neuron's arithmetic is the un-compiled step function of fused.py, not a nested compiled
call). The per-unit path runs the same ``frame_step`` of every graded/product unit and the
same fused.py step function of every neuron, so there is one implementation of the arithmetic.

Clock and state stay in the units: the first frame (differential coding's bias pass t = 0,
rate coding's t = 1, which create the state) runs on the per-unit path; every later frame
reads the state tensors from the units, runs the compiled frame, and hands the new tensors
back (:meth:`~snnbench.methods.snn.units.StatefulUnit.advance`: reference assignments), so
whatever reads unit state afterwards sees what the per-unit path would have left.

**One compilation per input shape, never one per frame.** t is a tensor input; every state
enters and leaves contiguous (so frame k + 1 sees the layouts frame k saw); each input shape
compiles its *own copy* of the frame function (its own code object, as fused.py does per
step signature), so dynamo's per-code cache holds one entry and no shape can push another
past the recompile limit.

**When.** Only when every stateful unit of the graph has a functional step (exact types
:data:`FUNCTIONAL_UNITS`; other methods' units, e.g. H-MT, AdaFire's burst or SRP's neurons,
keep the per-unit path), and only while nothing observes single units: no forward hook on
any module (the op counter, SNN Calibration's rate probes, AdaFire's meters) and no unit
counting its own spikes or ops. Any compilation failure falls back to the per-unit path for
that network, with one warning.
"""

from __future__ import annotations

import functools
import itertools
import logging
import operator
import types
import weakref
from typing import Any, Callable

import torch
import torch.fx as fx
from torch import nn
from torch.fx.node import map_aggregate
from torch.fx.passes.shape_prop import TensorMetadata
from torch.utils._pytree import tree_flatten, tree_unflatten

from snnbench.methods.snn import fused
from snnbench.methods.snn.graded import GradedUnit, ProductUnit
from snnbench.methods.snn.neurons import SpikingNeuron
from snnbench.methods.snn.units import StatefulUnit

log = logging.getLogger(__name__)

#: unit classes (exact types: subclasses change the step) that the frame path runs functionally
FUNCTIONAL_UNITS: tuple[type, ...] = (SpikingNeuron, GradedUnit, ProductUnit)


# -- opaque calls: inside the compiled frame, the very kernels the per-unit path runs ----------
#: ops whose inductor lowering may round differently from eager's kernel (reductions,
#: transcendental functions, normalisations, pools, products): the frame calls them opaquely
ROUNDING_OPS = {"mean", "sum", "softmax", "log_softmax", "layer_norm", "group_norm", "batch_norm", "instance_norm",
                "gelu", "silu", "sigmoid", "tanh", "exp", "log", "erf", "sqrt", "rsqrt", "pow", "norm", "var", "std",
                "adaptive_avg_pool1d", "adaptive_avg_pool2d", "avg_pool1d", "avg_pool2d", "interpolate", "matmul",
                "bmm", "mm", "linear", "conv1d", "conv2d", "scaled_dot_product_attention", "einsum", "cumsum",
                "hardswish", "hardsigmoid", "mish", "softplus", "logsumexp", "amax"}
#: modules that only move data (compiled inline; every other ANN module is called opaquely)
MOVING_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Flatten, nn.Unflatten)


class _Opaque:
    """``fn`` called with a static argument layout: the op's tensors fill the flat positions
    ``slots`` of ``(args, kwargs)`` (the other positions hold the constants of ``flat``); when
    ``fn`` is a module its parameters and buffers (``param_names``) follow as inputs, so that
    fake-tensor tracing sees them (the real call uses the module's own)."""

    def __init__(self, fn: Callable, flat: list, spec: Any, slots: tuple[int, ...], param_names: tuple[str, ...]):
        self.fn, self.flat, self.spec, self.slots, self.param_names = fn, flat, spec, slots, param_names

    def _args(self, tensors: list[torch.Tensor]) -> tuple[tuple, dict]:
        flat = list(self.flat)
        for slot, value in zip(self.slots, tensors):
            flat[slot] = value
        args, kwargs = tree_unflatten(flat, self.spec)
        return tuple(args), kwargs

    def real(self, xs: list[torch.Tensor]) -> torch.Tensor:
        args, kwargs = self._args(xs[:len(self.slots)])
        return self.fn(*args, **kwargs)

    def fake(self, xs: list[torch.Tensor]) -> torch.Tensor:
        args, kwargs = self._args(xs[:len(self.slots)])
        if not self.param_names:
            return self.fn(*args, **kwargs)
        params = dict(zip(self.param_names, xs[len(self.slots):]))
        return torch.func.functional_call(self.fn, params, args, kwargs)


_OPAQUE: dict[int, _Opaque] = {}
#: marks a tensor argument's position in an opaque call's layout
SLOT = type("TensorSlot", (), {"__repr__": lambda self: "SLOT"})()
_KEYS = itertools.count()


@torch.library.custom_op("snnbench::frame_opaque", mutates_args=())
def frame_opaque(xs: list[torch.Tensor], key: int) -> torch.Tensor:
    """One call of a registered function with eager's kernels (opaque to inductor)."""
    out = _OPAQUE[key].real(xs)
    if any(out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr() for x in xs):
        out = out.clone()  # an op's output may not alias its inputs
    return out


@frame_opaque.register_fake
def _frame_opaque_fake(xs: list[torch.Tensor], key: int) -> torch.Tensor:
    return _OPAQUE[key].fake(xs)


class _OpaqueCall(nn.Module):
    """Calls ``fn`` as one :func:`frame_opaque` op, for the argument layout of ``template`` (the
    node's (args, kwargs) with :data:`SLOT` at tensor positions)."""

    def __init__(self, fn: Callable, template: tuple[tuple, dict]) -> None:
        super().__init__()
        flat, spec = tree_flatten(template)
        slots = tuple(i for i, v in enumerate(flat) if v is SLOT)
        self.fn = fn  # a module is registered (its parameters are the op's inputs)
        names = tuple(n for n, _ in fn.named_parameters()) + tuple(n for n, _ in fn.named_buffers()) if isinstance(
            fn, nn.Module) else ()
        self.slots, self.param_names = slots, names
        self.key = next(_KEYS)
        _OPAQUE[self.key] = _Opaque(fn, [None if i in slots else v for i, v in enumerate(flat)], spec, slots, names)
        weakref.finalize(self, _OPAQUE.pop, self.key, None)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        flat, _ = tree_flatten((args, kwargs))
        tensors = [flat[i] for i in self.slots]
        params = [_attr(self.fn, name) for name in self.param_names]
        return torch.ops.snnbench.frame_opaque(tensors + params, self.key)


def _is_tensor(gm: fx.GraphModule, value: Any) -> bool | None:
    """Whether an argument is a tensor at run time: True/False, None when unknown."""
    if not isinstance(value, fx.Node):
        return False  # a constant (kept in the layout)
    meta = value.meta.get("tensor_meta")
    if isinstance(meta, TensorMetadata):
        return True
    if value.op == "call_module" and isinstance(gm.get_submodule(value.target), StatefulUnit):
        return True  # units emit tensors
    return None


def _template(gm: fx.GraphModule, args: tuple, kwargs: dict, tensors_at: tuple[int, ...] = ()
              ) -> tuple[tuple, dict] | None:
    """``(args, kwargs)`` with :data:`SLOT` at tensor positions (``tensors_at``: positional args that
    are tensors whatever they are now), or None when an argument's kind is unknown."""
    def mark(value: Any) -> Any:
        kind = _is_tensor(gm, value)
        if kind is None:
            raise LookupError
        return SLOT if kind else value
    try:
        marked = tuple(SLOT if i in tensors_at else map_aggregate(a, mark) for i, a in enumerate(args))
        return marked, {k: map_aggregate(v, mark) for k, v in kwargs.items()}
    except LookupError:
        return None


def _rounds_differently(gm: fx.GraphModule, node: fx.Node) -> bool:
    """ANN ops the frame calls opaquely: modules other than data movement, and functions or
    methods of :data:`ROUNDING_OPS`, whose output is one tensor."""
    if not isinstance(node.meta.get("tensor_meta"), TensorMetadata):
        return False
    if node.op == "call_module":
        return not isinstance(gm.get_submodule(node.target), MOVING_MODULES)
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    return node.op in ("call_function", "call_method") and name in ROUNDING_OPS


def _opaque_node_fn(gm: fx.GraphModule, node: fx.Node) -> Callable:
    if node.op == "call_module":
        return gm.get_submodule(node.target)
    if node.op == "call_method":
        return getattr(torch.Tensor, node.target)
    return node.target


class _UnitStep(nn.Module):
    """The call of one unit's functional step in the frame graph (fx calls a module's forward);
    a graded unit's function goes in as an opaque call when its arguments allow."""

    def __init__(self, unit: StatefulUnit, fn: _OpaqueCall | None = None) -> None:
        super().__init__()
        self.unit, self.fn = unit, fn

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, ...], *args: Any, **kwargs: Any) -> tuple:
        if self.fn is not None:
            return self.unit.step_with(self.fn, t, state, args, kwargs)
        return self.unit.frame_step(t, state, *args, **kwargs)


def _unit_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), StatefulUnit)]


def structural_obstacle(gm: fx.GraphModule) -> str | None:
    """Why ``gm`` cannot run as a functional frame at all (None: it can)."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if not placeholders or any(not p.args for p in placeholders[1:]):
        return "the graph takes more than the frame without defaults (the frame path feeds one input)"
    seen: set[str] = set()
    for node in _unit_nodes(gm):
        unit = gm.get_submodule(node.target)
        if type(unit) not in FUNCTIONAL_UNITS:
            return f"{node.target} ({type(unit).__name__}) has no functional step"
        if isinstance(unit, SpikingNeuron) and unit.kernel == "triton":
            return f"{node.target} asks for the Triton kernel (kernel=triton)"
        if isinstance(unit, SpikingNeuron) and unit.input_norm:
            return f"{node.target} applies a folded BatchNorm itself (methods/snn/input_norm.py)"
        if node.target in seen:
            return f"{node.target} is called more than once per frame"
        seen.add(node.target)
    stateful = {name for name, m in gm.named_modules() if isinstance(m, StatefulUnit)}
    if stateful - seen:
        return f"stateful modules outside the graph's calls: {sorted(stateful - seen)[:3]}"
    return None


def observed(gm: nn.Module) -> bool:
    """Whether something watches single modules: forward hooks (the op counter, SNN Calibration's
    probes, ...) or units counting their own spikes/ops. The frame path then steps aside."""
    from torch.nn.modules import module as module_globals

    if module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks:
        return True
    for m in gm.modules():
        if m._forward_hooks or m._forward_pre_hooks:
            return True
        if getattr(m, "count_spikes", False) or getattr(m, "counting", False):
            return True
    return False


def _attr(root: nn.Module, target: str) -> Any:
    return functools.reduce(getattr, target.split("."), root)


def build_frame_module(gm: fx.GraphModule, units: list[StatefulUnit], arities: list[int]) -> fx.GraphModule:
    """The functional frame of ``gm``: ``forward(frame, t, *states) -> (output, *new_states)``.

    ``units`` are the stateful units in graph order and ``arities`` the number of state
    tensors each threads (``len(unit.frame_state())``); the states are passed flat, unit by
    unit, and returned in the same order, each made contiguous.
    """
    graph = fx.Graph()
    frame = graph.placeholder("frame")
    t = graph.placeholder("t")
    state_in = [tuple(graph.placeholder(f"state_{i}_{j}") for j in range(k)) for i, k in enumerate(arities)]
    root: dict[str, Any] = {}
    env: dict[fx.Node, Any] = {}  # a node of the new graph, or a default input's value
    unit_index = {id(u): i for i, u in enumerate(units)}
    new_states: list[fx.Node] = []
    for node in gm.graph.nodes:
        if node.op == "placeholder":  # the frame; further inputs at their defaults, as gm(frame) has them
            env[node] = frame if not env else node.args[0]
        elif node.op == "output":
            out = fx.map_arg(node.args[0], env.__getitem__)
            graph.output((out, *new_states))
        elif node.op == "call_module" and id(gm.get_submodule(node.target)) in unit_index:
            i = unit_index[id(gm.get_submodule(node.target))]
            name = f"frame_unit_{i}"
            unit = units[i]
            opaque = None
            if isinstance(unit, GradedUnit):
                template = _template(gm, node.args, dict(node.kwargs), unit.dynamic)
                opaque = _OpaqueCall(unit.fn, template) if template is not None else None
            root[name] = _UnitStep(unit, opaque)
            args = fx.map_arg(node.args, env.__getitem__)
            kwargs = fx.map_arg(node.kwargs, env.__getitem__)
            call = graph.call_module(name, (t, state_in[i], *args), kwargs)
            env[node] = graph.call_function(operator.getitem, (call, 0))
            states = graph.call_function(operator.getitem, (call, 1))
            for j in range(arities[i]):
                item = graph.call_function(operator.getitem, (states, j))
                new_states.append(graph.call_method("contiguous", (item,)))
        else:
            template = _template(gm, node.args, dict(node.kwargs)) if _rounds_differently(gm, node) else None
            if template is not None:
                name = f"frame_op_{len(root)}"
                root[name] = _OpaqueCall(_opaque_node_fn(gm, node), template)
                env[node] = graph.call_module(name, fx.map_arg(node.args, env.__getitem__),
                                              fx.map_arg(node.kwargs, env.__getitem__))
                continue
            if node.op in ("call_module", "get_attr"):
                root[node.target] = _attr(gm, node.target)
            env[node] = graph.node_copy(node, env.__getitem__)
    graph.lint()
    return fx.GraphModule(root, graph, class_name="FunctionalFrame")


class FrameRunner:
    """Runs frames after the first of one converted network through its compiled functional frame."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.units: list[StatefulUnit] = [gm.get_submodule(n.target) for n in _unit_nodes(gm)]
        self._module: fx.GraphModule | None = None
        self._arities: list[int] = []
        #: the compiled frame of each input key (shape, dtype, device, state arities)
        self._compiled: dict[tuple, Callable] = {}
        self.failed = False

    def _frame_module(self, arities: list[int]) -> fx.GraphModule:
        if self._module is None or arities != self._arities:
            self._module, self._arities = build_frame_module(self.gm, self.units, arities), arities
            self._compiled.clear()
        return self._module

    def _compiled_frame(self, key: tuple, module: fx.GraphModule) -> Callable:
        fn = self._compiled.get(key)
        if fn is None:
            tag = f"frame_{len(self._compiled)}_{id(self):x}"
            own = fused._own_code_copy(type(module).forward, tag)
            fn = self._compiled[key] = torch.compile(types.MethodType(own, module), dynamic=False, fullgraph=True)
        return fn

    def compiled_variants(self) -> int:
        """Compiled entries torch._dynamo holds over every input key (1 per key once run: more
        would be a recompilation)."""
        from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list

        return sum(len(_debug_get_cache_entry_list(fn._torchdynamo_orig_callable.__func__.__code__))
                   for fn in self._compiled.values())

    def frame_number(self) -> int | None:
        """The number t of the next frame by the units' common clock (differential: frames seen,
        the bias pass being frame 0; rate: frames seen + 1); None before the first frame or if
        the clocks disagree."""
        clocks = {unit.t for unit in self.units}
        if len(clocks) != 1 or not self.units:
            return None
        seen = clocks.pop()
        if seen == 0:
            return None
        return seen if self.units[0].coding == "differential" else seen + 1

    def __call__(self, frame: torch.Tensor) -> Any:
        """The next frame (not the first: the units hold the state of the previous one), or
        ``None`` when the compiled frame cannot run it (the caller then steps unit by unit)."""
        t = self.frame_number()
        if self.failed or t is None:
            return None
        states = [unit.frame_state() for unit in self.units]
        if any(s is None for group in states for s in group):
            return None  # a unit was not stepped in the first frame: nothing to thread
        arities = [len(group) for group in states]
        flat = [s.contiguous() for group in states for s in group]
        if torch.is_inference_mode_enabled() and not frame.is_inference():
            frame = frame.clone()  # one kind of tensor every frame (dynamo guards on it)
        key = (tuple(frame.shape), frame.dtype, frame.device, tuple(arities))
        try:
            module = self._frame_module(arities)
            out, *new = self._compiled_frame(key, module)(frame, torch.tensor(float(t)), *flat)
        except Exception as exc:  # inductor/toolchain failures; genuine errors re-raise from the per-unit path
            self.failed = True
            log.warning("torch.compile of the network frame failed (%s: %s); stepping unit by unit "
                        "(identical results, slower). Set compile_frame=false to skip compiling.",
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            return None
        start = 0
        for unit, k in zip(self.units, arities):
            unit.advance(tuple(new[start:start + k]))
            start += k
        return out
