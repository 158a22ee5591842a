"""The converted graph: where neurons go in a traced ANN, and units put in place.

Built on :mod:`snnbench.methods.snn.tracing` (trace, normalise) and
:mod:`snnbench.methods.snn.operations` (node kinds):

1. **Sites**: with ``placement="activations"`` (CNNs) a neuron replaces every ReLU/ReLU6;
   with ``placement="inputs"`` (transformers, docs/dcgs-official-code.md §4) a signed neuron
   goes in front of every conv/linear layer and on both operands of every product, and every
   non-linearity becomes a graded unit.
2. **Instantiate**: a fresh copy of the graph with units built by factories (probes for
   calibration, neurons for conversion).
3. **Memo**: :func:`network_graph` builds the graph once per live, unedited model.
"""

from __future__ import annotations

import copy
import itertools
import weakref
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from snnbench.methods.snn import native_pool
from snnbench.methods.snn.operations import (CONNECTION_MODULES, CONV_MODULES, FrozenBatchNorm2d, activation_range,
                                             classify, dynamic_args)
from snnbench.methods.snn.tracing import normalise, shape_prop, swap_maxpool_before_relu, trace, unique_attr

Placement = Literal["activations", "inputs"]


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
                path = unique_attr(gm, f"graded_{_safe(name)}")
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
                    path = unique_attr(gm, f"neuron_{_safe(site.name)}")
                    gm.add_submodule(path, unit)
                    anchor = nodes[site.consumers[0]]
                    with gm.graph.inserting_before(anchor):
                        spiked = gm.graph.call_module(path, (value,))
                    for consumer_name in site.consumers:
                        consumer = nodes[consumer_name]
                        consumer.replace_input_with(value, spiked)
                    unit_paths[site.name] = path
        native_pool.install(gm)  # the same values, ~8x faster on one CPU thread (native_pool.py)
        gm.graph.lint()
        gm.recompile()
        return gm, unit_paths


def _safe(name: str) -> str:
    return name.replace(".", "_").replace(":", "_")


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
            if isinstance(module, CONV_MODULES + (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, FrozenBatchNorm2d,
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
    shape_prop(gm, example)
    kinds, dynamic = classify(gm)
    if placement == "auto":
        placement = "inputs" if _looks_like_transformer(gm, kinds) else "activations"
    if placement not in ("activations", "inputs"):
        raise ValueError(f"placement must be auto, activations or inputs; got {placement!r}")
    if placement == "activations" and swap_maxpool_before_relu(gm):
        shape_prop(gm, example)
        kinds, dynamic = classify(gm)
    nodes = list(gm.graph.nodes)
    sites: list[Site] = []
    graded: list[str] = []
    if placement == "activations":
        for node in nodes:
            kind = kinds[node.name]
            if kind == "activation":
                floor, ceiling = activation_range(gm.get_submodule(node.target))
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
                for arg in dynamic_args(node, dynamic):
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
