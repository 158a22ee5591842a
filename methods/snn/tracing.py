"""Tracing and normalising an ANN with torch.fx, before its nodes are classified.

Conversion works on a traced copy of the ANN (the user's model is never modified):

1. **Trace** with a tracer that keeps conv, linear, norm, pooling and activation modules as
   leaves (so timm's LayerNorm subclass stays one module) and binds every forward
   argument after the first to its default.
2. **Normalise**: functional activations (``F.relu`` in torchvision's BasicBlock is a module
   called twice; ``x.relu()``, ``torch.relu``) become one module per call site, so every
   stateful unit sees exactly one call per frame. With neurons at activations, a MaxPool
   fed by a ReLU is moved in front of it (max and ReLU commute; docs/dcgs-official-code.md §2.8).
"""

from __future__ import annotations

import copy
import inspect

import torch
import torch.fx as fx
from torch import nn

from snnbench.methods.snn.operations import (ACTIVATION_FUNCTIONS, ACTIVATION_METHODS, ACTIVATION_MODULES,
                                             GRADED_MODULES, LEAF_MODULES, MAXPOOL_MODULES,
                                             UnsupportedOperationError)
from snnbench.methods.snn.units import StatefulUnit


class SNNTracer(fx.Tracer):
    """Keeps the modules the engine understands as leaves (including subclasses such as
    timm's LayerNorm), traces through everything else."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
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


def unique_attr(gm: nn.Module, base: str) -> str:
    """``base``, or ``base_1``, ``base_2`` ...: the first name ``gm`` has no attribute of."""
    name, i = base, 1
    while hasattr(gm, name):
        name = f"{base}_{i}"
        i += 1
    return name


def shape_prop(gm: fx.GraphModule, example: torch.Tensor) -> None:
    """Record every node's tensor shape in its ``tensor_meta`` by running ``example`` once."""
    from torch.fx.passes.shape_prop import ShapeProp

    ShapeProp(gm).propagate(example)


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
            path = unique_attr(gm, f"act_{node.name}")
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
