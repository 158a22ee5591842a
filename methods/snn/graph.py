"""Model surgery on a torch.fx graph: normalise an ANN, find where neurons go, insert units.

Conversion works on a traced copy of the ANN (the user's model is never modified):

1. **Trace** with a tracer that keeps conv, linear, norm, pooling and activation modules as
   leaves (so timm's LayerNorm subclass stays one module) and binds every forward
   argument after the first to its default.
2. **Normalise**: functional activations (``F.relu`` in torchvision's BasicBlock is a module
   called twice; ``x.relu()``, ``torch.relu``) become one module per call site, so every
   stateful unit sees exactly one call per frame. With neurons at activations, a MaxPool
   fed by a ReLU is moved in front of it (max and ReLU commute; dcgs.md §2.8). A QCFS
   activation (snnbench.common.activations) counts as a ReLU clipped at its λ.
3. **Classify** every node that depends on the input: *affine* (conv, linear, BN, average
   pooling, adds, reshapes, interpolation, products with a constant: applied unchanged to
   every frame, dcgs.md §2.4), *activation* (ReLU, ReLU6), *graded* (any other
   non-linearity, incl. max-pool) or *product* (a product of two input-dependent tensors).
   Anything else is an error naming the operation, never a silent approximation.
4. **Sites**: with ``placement="activations"`` (CNNs) a neuron replaces every ReLU/ReLU6;
   with ``placement="inputs"`` (transformers, dcgs.md §4) a signed neuron goes in front of
   every conv/linear layer and on both operands of every product, and every
   non-linearity becomes a graded unit.
5. **Instantiate**: a fresh copy of the graph with units built by factories (probes for
   calibration, neurons for conversion).
"""

from __future__ import annotations

import copy
import inspect
import itertools
import operator
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from snnbench.common.activations import QCFS

Placement = Literal["activations", "inputs"]


class UnsupportedOperationError(RuntimeError):
    """The model uses an operation the engine cannot convert exactly."""


try:  # torchvision's frozen BN (detection backbones) is affine
    from torchvision.ops.misc import FrozenBatchNorm2d as _FrozenBN
except ImportError:  # pragma: no cover
    _FrozenBN = nn.BatchNorm2d

CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONNECTION_MODULES = CONV_MODULES + (nn.Linear,)
AFFINE_MODULES = CONNECTION_MODULES + (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, _FrozenBN,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, nn.ZeroPad2d, nn.PixelShuffle, nn.PixelUnshuffle,
)
#: a QCFS activation is a clipped ReLU [0, λ] to the engine (its quantisation is what the
#: spiking neurons produce by themselves); the qcfs and srp methods read its λ
ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, QCFS)
GRADED_MODULES = (
    nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Softmax, nn.LogSoftmax, nn.Mish,
    nn.ELU, nn.LeakyReLU, nn.Hardtanh, nn.Softplus, nn.LayerNorm, nn.GroupNorm,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
MAXPOOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
LEAF_MODULES = AFFINE_MODULES + ACTIVATION_MODULES + GRADED_MODULES

ACTIVATION_FUNCTIONS = {F.relu: (0.0, None), torch.relu: (0.0, None), torch.relu_: (0.0, None),
                        F.relu_: (0.0, None), F.relu6: (0.0, 6.0)}
ACTIVATION_METHODS = {"relu": (0.0, None), "relu_": (0.0, None)}

AFFINE_FUNCTIONS = {
    operator.add, operator.sub, operator.neg, operator.pos, operator.getitem, operator.iadd, operator.isub,
    torch.add, torch.sub, torch.neg, torch.cat, torch.concat, torch.stack, torch.flatten, torch.reshape,
    torch.transpose, torch.permute, torch.squeeze, torch.unsqueeze, torch.chunk, torch.split, torch.unbind,
    torch.narrow, torch.roll, torch.flip, torch.mean, torch.sum, torch.movedim, torch.swapaxes,
    F.interpolate, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.avg_pool1d,
    F.avg_pool2d, F.avg_pool3d, F.dropout, F.linear, F.conv1d, F.conv2d, F.conv3d, F.pixel_shuffle,
}
#: ops whose inputs must contain at most one input-dependent tensor to stay affine
BILINEAR_FUNCTIONS = {operator.mul, operator.imul, operator.matmul, operator.truediv, torch.mul, torch.matmul,
                      torch.bmm, torch.einsum, torch.div}
AFFINE_METHODS = {
    "view", "reshape", "flatten", "permute", "transpose", "contiguous", "expand", "expand_as", "unsqueeze",
    "squeeze", "chunk", "split", "unbind", "narrow", "repeat", "mean", "sum", "add", "add_", "sub", "sub_", "neg",
    "clone", "to", "type_as", "float", "flip", "roll", "unflatten", "movedim", "swapaxes", "__getitem__",
}
BILINEAR_METHODS = {"mul", "mul_", "matmul", "div", "div_", "bmm"}
GRADED_FUNCTIONS = {
    F.gelu, F.silu, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.softmax, torch.softmax, F.log_softmax,
    F.layer_norm, F.group_norm, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool2d, F.hardswish,
    F.hardsigmoid, F.mish, F.elu, F.leaky_relu, F.hardtanh, F.softplus, torch.exp, torch.rsqrt, torch.sqrt,
}
GRADED_METHODS = {"softmax", "sigmoid", "tanh", "exp", "log_softmax", "rsqrt", "sqrt", "gelu"}
PASS_THROUGH_FUNCTION_NAMES = {"maybe_add_mask"}  # timm: adds a mask that is None in classification


class SNNTracer(fx.Tracer):
    """Keeps the modules the engine understands as leaves (including subclasses such as
    timm's LayerNorm), traces through everything else."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        from snnbench.methods.snn.units import StatefulUnit

        if isinstance(m, LEAF_MODULES) or isinstance(m, StatefulUnit):
            return True
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False
        return super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace a deep copy of ``model`` (eval mode), binding extra arguments to defaults."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():  # timm attention: the explicit q @ k path, not fused SDPA
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    params = list(inspect.signature(model.forward).parameters.values())
    concrete = {p.name: p.default for p in params[1:] if p.default is not inspect.Parameter.empty}
    tracer = SNNTracer()
    try:
        graph = tracer.trace(model, concrete_args=concrete or None)
    except Exception as err:  # noqa: BLE001 - surface as a conversion error with the cause
        raise UnsupportedOperationError(f"could not trace {type(model).__name__} with torch.fx: {err}") from err
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


# --------------------------------------------------------------------------------------
@dataclass
class Site:
    """Where a neuron goes.

    Attributes:
        name: stable identifier (module path for activations, node name for inputs).
        kind: ``"activation"`` (replaces a ReLU/ReLU6) or ``"input"`` (in front of a layer).
        node: name of the graph node whose value the neuron quantises.
        floor, ceiling: output range of the activation (0/None for ReLU, 0/6 for ReLU6,
            None/None for signed input sites).
        feature_dim: the feature axis of the value (1 for conv maps, -1 for token features).
        consumers: for input sites, the nodes that read the spiked value.
    """

    name: str
    kind: Literal["activation", "input"]
    node: str
    floor: float | None = 0.0
    ceiling: float | None = None
    feature_dim: int = 1
    ndim: int = 4
    consumers: list[str] = field(default_factory=list)


@dataclass
class NetworkGraph:
    """A traced, normalised ANN with its classification and neuron sites."""

    module: fx.GraphModule
    placement: Placement
    sites: list[Site]
    graded: list[str]          # node names that become graded units
    kinds: dict[str, str]      # node name -> affine/activation/graded/product/constant/input/output
    dynamic: set[str]

    def node(self, name: str) -> fx.Node:
        for n in self.module.graph.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def instantiate(self, site_unit: Callable[[Site], nn.Module] | None,
                    graded_unit: Callable[[fx.Node, Callable, tuple[int, ...], str], nn.Module] | None
                    ) -> tuple[fx.GraphModule, dict[str, str]]:
        """A new GraphModule with units in place; returns it and a map site name -> unit path.

        ``site_unit(site)`` builds the module for a neuron site (None: leave the ANN op);
        ``graded_unit(node, fn, dynamic_positions, label)`` builds the module replacing a
        graded/product node (None: keep the ANN op).
        """
        gm = copy.deepcopy(self.module)
        nodes = {n.name: n for n in gm.graph.nodes}
        unit_paths: dict[str, str] = {}
        dynamic = set(self.dynamic)  # grows with the names of replacement nodes
        if graded_unit is not None:
            for name in self.graded:
                node = nodes[name]
                fn, positions, label = _callable_of(gm, node, dynamic)
                unit = graded_unit(node, fn, positions, label)
                path = _unique_attr(gm, f"graded_{_safe(name)}")
                gm.add_submodule(path, unit)
                with gm.graph.inserting_before(node):
                    new = gm.graph.call_module(path, tuple(node.args), dict(node.kwargs))
                node.replace_all_uses_with(new)
                gm.graph.erase_node(node)
                nodes[name] = new
                dynamic.add(new.name)
        if site_unit is not None:
            for site in self.sites:
                unit = site_unit(site)
                if site.kind == "activation":
                    node = nodes[site.node]
                    assert node.op == "call_module"
                    gm.add_submodule(node.target, unit)  # replaces the ReLU module at its own path
                    unit_paths[site.name] = node.target
                else:
                    value = nodes[site.node]
                    path = _unique_attr(gm, f"neuron_{_safe(site.name)}")
                    gm.add_submodule(path, unit)
                    anchor = nodes[site.consumers[0]]
                    with gm.graph.inserting_before(anchor):
                        spiked = gm.graph.call_module(path, (value,))
                    for consumer_name in site.consumers:
                        consumer = nodes[consumer_name]
                        consumer.replace_input_with(value, spiked)
                    unit_paths[site.name] = path
        gm.graph.lint()
        gm.recompile()
        return gm, unit_paths


def _safe(name: str) -> str:
    return name.replace(".", "_").replace(":", "_")


def _unique_attr(gm: nn.Module, base: str) -> str:
    name, i = base, 1
    while hasattr(gm, name):
        name = f"{base}_{i}"
        i += 1
    return name


def _callable_of(gm: fx.GraphModule, node: fx.Node, dynamic: set[str]) -> tuple[Callable, tuple[int, ...], str]:
    """The function a graded node computes, the positions of its dynamic args, a label."""
    positions = tuple(i for i, a in enumerate(node.args) if isinstance(a, fx.Node) and a.name in dynamic)
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return module, positions, type(module).__name__.lower()
    if node.op == "call_method":
        return getattr(torch.Tensor, node.target), positions, node.target
    return node.target, positions, getattr(node.target, "__name__", str(node.target))


# --------------------------------------------------------------------------------------
def _shape_prop(gm: fx.GraphModule, example: torch.Tensor) -> None:
    from torch.fx.passes.shape_prop import ShapeProp

    ShapeProp(gm).propagate(example)


def _is_tensor_node(node: fx.Node) -> bool:
    return node.meta.get("tensor_meta") is not None


def _dynamic_args(node: fx.Node, dynamic: set[str]) -> list[fx.Node]:
    out: list[fx.Node] = []

    def visit(a: Any) -> None:
        if isinstance(a, fx.Node) and a.name in dynamic:
            out.append(a)

    fx.node.map_arg(node.args, visit)
    fx.node.map_arg(node.kwargs, visit)
    return out


def normalise(gm: fx.GraphModule) -> fx.GraphModule:
    """Functional activations -> modules; one module per call site for stateful ops."""
    graph = gm.graph
    counts: dict[str, int] = {}
    for node in list(graph.nodes):
        spec = None
        if node.op == "call_function" and node.target in ACTIVATION_FUNCTIONS:
            spec = ACTIVATION_FUNCTIONS[node.target]
        elif node.op == "call_method" and node.target in ACTIVATION_METHODS:
            spec = ACTIVATION_METHODS[node.target]
        if spec is not None:
            module = nn.ReLU6() if spec[1] == 6.0 else nn.ReLU()
            path = _unique_attr(gm, f"act_{node.name}")
            gm.add_submodule(path, module)
            with graph.inserting_before(node):
                new = graph.call_module(path, (node.args[0],))
            node.replace_all_uses_with(new)
            graph.erase_node(node)
            continue
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            if isinstance(module, ACTIVATION_MODULES + GRADED_MODULES):
                k = counts.get(node.target, 0)
                counts[node.target] = k + 1
                if k > 0:  # second and later calls get their own copy
                    path = f"{node.target}__{k}"
                    gm.add_submodule(path, copy.deepcopy(module))
                    node.target = path
    graph.lint()
    gm.recompile()
    return gm


def _activation_range(module: nn.Module) -> tuple[float, float | None]:
    if isinstance(module, QCFS):
        return 0.0, float(module.threshold())
    return (0.0, 6.0) if isinstance(module, nn.ReLU6) else (0.0, None)


def swap_maxpool_before_relu(gm: fx.GraphModule) -> int:
    """maxpool(relu(x)) -> relu(maxpool(x)) where the ReLU feeds only the pool. Returns count."""
    swapped = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), MAXPOOL_MODULES):
            continue
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module"
                and isinstance(gm.get_submodule(src.target), ACTIVATION_MODULES) and len(src.users) == 1):
            continue
        x = src.args[0]
        node.replace_input_with(src, x)      # pool reads the pre-activation
        node.replace_all_uses_with(src)      # users of the pool now read the relu
        src.replace_input_with(x, node)      # relu reads the pool
        node.append(src)                     # keep topological order: pool, then relu
        swapped += 1
    gm.graph.lint()
    gm.recompile()
    return swapped


def classify(gm: fx.GraphModule) -> tuple[dict[str, str], set[str]]:
    """Node kind for every node, and the set of input-dependent (dynamic) tensor nodes."""
    kinds: dict[str, str] = {}
    dynamic: set[str] = set()
    first_placeholder = True
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            kinds[node.name] = "input" if first_placeholder else "constant"
            if first_placeholder:
                dynamic.add(node.name)
            first_placeholder = False
            continue
        if node.op == "output":
            kinds[node.name] = "output"
            continue
        dyn_args = _dynamic_args(node, dynamic)
        if node.op == "get_attr" or not dyn_args or not _is_tensor_node(node):
            kinds[node.name] = "constant"
            continue
        dynamic.add(node.name)
        kinds[node.name] = _classify_dynamic(gm, node, dyn_args)
    return kinds, dynamic


def _describe(node: fx.Node) -> str:
    target = node.target if node.op != "call_function" else getattr(node.target, "__qualname__", node.target)
    return f"{node.op} {target!s} (node {node.name})"


def _classify_dynamic(gm: fx.GraphModule, node: fx.Node, dyn_args: list[fx.Node]) -> str:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if isinstance(module, ACTIVATION_MODULES):
            return "activation"
        if isinstance(module, AFFINE_MODULES):
            return "affine"
        if isinstance(module, GRADED_MODULES):
            return "graded"
        raise UnsupportedOperationError(
            f"module {type(module).__name__} at {node.target!r} is not supported by the SNN engine "
            f"(affine: conv/linear/BN/avg-pool/...; activations: ReLU/ReLU6; graded: GELU/LayerNorm/softmax/max-pool/...)")
    if node.op == "call_function":
        target = node.target
        if target in AFFINE_FUNCTIONS:
            if target is F.interpolate or target in (F.linear, F.conv1d, F.conv2d, F.conv3d):
                if len(dyn_args) > 1:
                    return "product"
            return "affine"
        if target in BILINEAR_FUNCTIONS:
            return "product" if len(dyn_args) > 1 else _check_divisor(node, dyn_args)
        if target in GRADED_FUNCTIONS:
            return "graded"
        if getattr(target, "__name__", "") in PASS_THROUGH_FUNCTION_NAMES:
            mask = node.args[1] if len(node.args) > 1 else None
            if mask is None or (isinstance(mask, fx.Node) and mask.meta.get("tensor_meta") is None):
                return "affine"
        raise UnsupportedOperationError(f"function {_describe(node)} is not supported by the SNN engine")
    if node.op == "call_method":
        if node.target in AFFINE_METHODS:
            return "affine"
        if node.target in BILINEAR_METHODS:
            return "product" if len(dyn_args) > 1 else _check_divisor(node, dyn_args)
        if node.target in GRADED_METHODS:
            return "graded"
        raise UnsupportedOperationError(f"tensor method {_describe(node)} is not supported by the SNN engine")
    raise UnsupportedOperationError(f"{_describe(node)} is not supported by the SNN engine")


def _check_divisor(node: fx.Node, dyn_args: list[fx.Node]) -> str:
    target = node.target if node.op == "call_function" else node.target
    is_div = target in (operator.truediv, torch.div, "div", "div_")
    if is_div and len(node.args) > 1 and node.args[1] is dyn_args[0]:
        raise UnsupportedOperationError(f"division by an input-dependent tensor ({_describe(node)}) is not supported")
    return "affine"


# --------------------------------------------------------------------------------------
def _feature_dim(gm: fx.GraphModule, node: fx.Node, kinds: dict[str, str]) -> int:
    """1 for conv feature maps, -1 for token/feature-last tensors (walks back to a layer)."""
    meta = node.meta.get("tensor_meta")
    ndim = len(meta.shape) if meta is not None and hasattr(meta, "shape") else 2
    if ndim <= 2:
        return 1
    seen = 0
    current = node
    while seen < 64:
        seen += 1
        if current.op == "call_module":
            module = gm.get_submodule(current.target)
            if isinstance(module, (nn.Linear, nn.LayerNorm)):
                return -1
            if isinstance(module, CONV_MODULES + (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, _FrozenBN,
                                                  nn.GroupNorm)):
                return 1
        if current.op == "placeholder":
            return 1
        parents = [a for a in current.all_input_nodes if kinds.get(a.name) not in (None, "constant")]
        if not parents:
            return 1
        current = parents[0]
    return 1


def _ndim(node: fx.Node) -> int:
    meta = node.meta.get("tensor_meta")
    return len(meta.shape) if meta is not None and hasattr(meta, "shape") else 2


def build_network_graph(model: nn.Module, example: torch.Tensor, placement: Placement | Literal["auto"] = "auto"
                        ) -> NetworkGraph:
    """Trace, normalise and classify ``model``; find the neuron sites for ``placement``.

    ``placement="auto"`` picks ``"inputs"`` (transformer recipe) when the model has
    LayerNorm, softmax, GELU or products of two signals, and ``"activations"`` otherwise.
    """
    gm = normalise(trace(model))
    _shape_prop(gm, example)
    kinds, dynamic = classify(gm)
    if placement == "auto":
        placement = "inputs" if _looks_like_transformer(gm, kinds) else "activations"
    if placement not in ("activations", "inputs"):
        raise ValueError(f"placement must be auto, activations or inputs; got {placement!r}")
    if placement == "activations" and swap_maxpool_before_relu(gm):
        _shape_prop(gm, example)
        kinds, dynamic = classify(gm)
    nodes = list(gm.graph.nodes)
    sites: list[Site] = []
    graded: list[str] = []
    if placement == "activations":
        for node in nodes:
            kind = kinds[node.name]
            if kind == "activation":
                floor, ceiling = _activation_range(gm.get_submodule(node.target))
                sites.append(Site(name=node.target, kind="activation", node=node.name, floor=floor, ceiling=ceiling,
                                  feature_dim=_feature_dim(gm, node, kinds), ndim=_ndim(node)))
            elif kind in ("graded", "product"):
                graded.append(node.name)
    else:
        consumers_of: dict[str, list[str]] = {}
        order: list[str] = []
        for node in nodes:
            kind = kinds[node.name]
            if kind in ("graded", "product", "activation"):
                graded.append(node.name)
            is_connection = kind == "affine" and node.op == "call_module" and isinstance(
                gm.get_submodule(node.target), CONNECTION_MODULES)
            if is_connection or kind == "product":
                for arg in _dynamic_args(node, dynamic):
                    if arg.name not in consumers_of:
                        consumers_of[arg.name] = []
                        order.append(arg.name)
                    if node.name not in consumers_of[arg.name]:
                        consumers_of[arg.name].append(node.name)
        by_name = {n.name: n for n in nodes}
        for value in order:
            consumers = consumers_of[value]
            first = by_name[consumers[0]]
            consumer_is_linear = first.op == "call_module" and isinstance(gm.get_submodule(first.target), nn.Linear)
            fdim = -1 if consumer_is_linear and _ndim(by_name[value]) > 2 else 1
            sites.append(Site(name=value, kind="input", node=value, floor=None, ceiling=None, feature_dim=fdim,
                              ndim=_ndim(by_name[value]), consumers=consumers))
    return NetworkGraph(module=gm, placement=placement, sites=sites, graded=graded, kinds=kinds, dynamic=dynamic)


def _looks_like_transformer(gm: fx.GraphModule, kinds: dict[str, str]) -> bool:
    for node in gm.graph.nodes:
        kind = kinds.get(node.name)
        if kind == "product":
            return True
        if kind == "graded":
            if node.op == "call_module" and isinstance(gm.get_submodule(node.target), (nn.LayerNorm, nn.GELU, nn.Softmax)):
                return True
            if node.op != "call_module" and (node.target in (F.layer_norm, F.gelu, F.softmax, torch.softmax)
                                             or node.target in ("softmax",)):
                return True
    return False


# --------------------------------------------------------------------------------------
#: graphs already built, per live model (weak keys: a model's entries go with it)
_GRAPH_MEMO: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, NetworkGraph]]" = weakref.WeakKeyDictionary()
#: how many times :func:`network_graph` traced a model (tests and benchmarks read it)
GRAPH_BUILDS = {"count": 0}


def _model_fingerprint(model: nn.Module) -> tuple:
    """Changes when the model's modules, parameters or buffers are replaced or edited in place."""
    tensors = tuple((id(t), t._version) for t in itertools.chain(model.parameters(), model.buffers()))
    return tuple(id(m) for m in model.modules()), tensors


def network_graph(model: nn.Module, example: torch.Tensor, placement: Placement | Literal["auto"] = "auto"
                  ) -> NetworkGraph:
    """:func:`build_network_graph`, built once per model, input layout and placement.

    One cell asks for the graph up to four times (the ANN reference, the statistic kinds,
    the statistics pass, the conversion); tracing and shape propagation of a detector take
    seconds, so the graph is kept while the model lives and is unchanged (same modules,
    same parameter tensors, no in-place edit). The key ignores the batch size: the graph
    (its nodes, kinds and sites) does not depend on it. Callers must treat the returned
    graph as read-only; :meth:`NetworkGraph.instantiate` copies it.
    """
    key_base = (tuple(example.shape[1:]), example.dtype, example.device.type, _model_fingerprint(model))
    try:
        per_model = _GRAPH_MEMO.setdefault(model, {})
    except TypeError:  # pragma: no cover - a module that cannot be weakly referenced
        return build_network_graph(model, example, placement)
    found = per_model.get((*key_base, placement))
    if found is not None:
        return found
    GRAPH_BUILDS["count"] += 1
    graph = build_network_graph(model, example, placement)
    if len(per_model) > 8:  # a model edited many times: keep only the newest graphs
        per_model.clear()
    per_model[(*key_base, placement)] = graph
    if placement == "auto":  # the same graph answers a request for the placement it chose
        per_model[(*key_base, graph.placement)] = graph
    return graph
