"""Which ANN operations the engine converts, and how each node of a traced graph is classified.

Every node that depends on the input is one of (docs/dcgs-official-code.md §2.4-2.8):

* *affine*: conv, linear, BN, average pooling, adds, reshapes, interpolation, products with a
  constant: applied unchanged to every frame (§2.4);
* *activation*: ReLU, ReLU6, or a QCFS activation (:mod:`snnbench.common.activations`), which
  counts as a ReLU clipped at its λ;
* *graded*: any other non-linearity, incl. max-pool (§2.5, §2.8);
* *product*: a product of two input-dependent tensors (§2.6-2.7).

Anything else is an error naming the operation, never a silent approximation.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from snnbench.common.activations import QCFS


class UnsupportedOperationError(RuntimeError):
    """The model uses an operation the engine cannot convert exactly."""


try:  # torchvision's frozen BN (detection backbones) is affine
    from torchvision.ops.misc import FrozenBatchNorm2d
except ImportError:  # pragma: no cover
    FrozenBatchNorm2d = nn.BatchNorm2d

CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONNECTION_MODULES = CONV_MODULES + (nn.Linear,)
AFFINE_MODULES = CONNECTION_MODULES + (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, FrozenBatchNorm2d,
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


def is_tensor_node(node: fx.Node) -> bool:
    """Whether shape propagation recorded a tensor for ``node``."""
    return node.meta.get("tensor_meta") is not None


def dynamic_args(node: fx.Node, dynamic: set[str]) -> list[fx.Node]:
    """The arguments of ``node`` (positional and keyword, nested included) that are input-dependent."""
    out: list[fx.Node] = []

    def visit(a: Any) -> None:
        if isinstance(a, fx.Node) and a.name in dynamic:
            out.append(a)

    fx.node.map_arg(node.args, visit)
    fx.node.map_arg(node.kwargs, visit)
    return out


def activation_range(module: nn.Module) -> tuple[float, float | None]:
    """The output range [floor, ceiling] of an activation module (ceiling None: unbounded)."""
    if isinstance(module, QCFS):
        return 0.0, float(module.threshold())
    return (0.0, 6.0) if isinstance(module, nn.ReLU6) else (0.0, None)


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
        dyn_args = dynamic_args(node, dynamic)
        if node.op == "get_attr" or not dyn_args or not is_tensor_node(node):
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
