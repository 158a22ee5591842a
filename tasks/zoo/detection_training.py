"""The zoo's detection training loop, and load-or-train through the integrity-checked cache.

Recipe (docs/datasets-and-weights.md §4.3: FCOS + ImageNet MobileNetV2 reached mAP 0.418
after 277 steps of 16 canvases, 230 s on 2 cores): SGD (lr 0.01, momentum 0.9), linear warm-up then cosine
decay, gradient-norm clipping at 10, horizontal flips, fixed seeds. The early, high
resolution backbone stages stay frozen as in torchvision's detection builders
(``trainable_backbone_layers``); BN is frozen throughout.

The cache holds verified entries of :mod:`snnbench.common.cache` (sha256 sidecar, atomic
writes) under the same file lock as the classifiers (:mod:`snnbench.tasks.zoo.provide`), so
two processes never train the same entry at once and a damaged entry is retrained with a
warning.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from snnbench.tasks.base import DataNotFoundError
from snnbench.tasks.zoo.spec import ModelSpec
from snnbench.tasks.zoo.training import seed_everything, training_device

log = logging.getLogger(__name__)

#: progress is also logged every this many steps (tqdm is off when stderr is not a TTY)
LOG_EVERY = 50


@dataclass(frozen=True)
class DetectionRecipe:
    """How the zoo trains a torchvision single-stage detector (fixed seed: reproducible).

    Attributes:
        steps: optimiser steps (batches), not epochs: the cost is what the user waits for.
        batch_size: images per step.
        lr, momentum, weight_decay: SGD.
        warmup_steps: linear warm-up from lr/1000, then cosine decay to 0.
        grad_clip: max global gradient norm.
        hflip: random horizontal flips (boxes flipped with the image).
        frozen_stages: leading children of the backbone body kept frozen (MobileNetV2
            ``features[0..3]``, strides 2-4: the costly high-resolution backward pass).
        seed: data order, flips and every RNG of the loop.
    """

    steps: int = 300
    batch_size: int = 16
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    grad_clip: float = 10.0
    hflip: bool = True
    frozen_stages: int = 4
    seed: int = 0

    def key(self) -> str:
        """Short stable text folded into the cache file name."""
        return (f"s{self.steps}-b{self.batch_size}-sgd{self.lr:g}-m{self.momentum:g}-wd{self.weight_decay:g}"
                f"-w{self.warmup_steps}-c{self.grad_clip:g}-f{int(self.hflip)}-z{self.frozen_stages}-s{self.seed}")

    def lr_at(self, step: int) -> float:
        """Learning rate of 0-based ``step``."""
        if step < self.warmup_steps:
            return self.lr * (0.001 + 0.999 * step / max(1, self.warmup_steps))
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class DetectionTrainData:
    """Training images (uint8 ``[C, H, W]``, C = 1 or 3) and their targets.

    ``targets[i]`` is ``{"boxes": float32 [N, 4] xyxy, "labels": int64 [N]}`` with labels
    the model's class indices.
    """

    images: Sequence[torch.Tensor]
    targets: Sequence[dict[str, torch.Tensor]]

    def __post_init__(self) -> None:
        if len(self.images) != len(self.targets):
            raise ValueError(f"{len(self.images)} training images but {len(self.targets)} targets")
        if not len(self.images):
            raise DataNotFoundError("no training images for the detector")

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, i: int, flip: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Image ``i`` as float RGB in [0, 1], optionally flipped left-right with its boxes."""
        image = self.images[i]
        image = (image.expand(3, -1, -1) if image.shape[0] == 1 else image).float().div(255.0)
        boxes = self.targets[i]["boxes"].clone()
        if flip:
            width = image.shape[-1]
            image = image.flip(-1)
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
        return image, {"boxes": boxes, "labels": self.targets[i]["labels"]}


def freeze_backbone_stages(detector: nn.Module, stages: int) -> list[nn.Parameter]:
    """Freeze the first ``stages`` children of ``detector.backbone.body``; the trainable parameters."""
    body = detector.backbone.body
    for i, (_, child) in enumerate(body.named_children()):
        if i < stages:
            child.requires_grad_(False)
    return [p for p in detector.parameters() if p.requires_grad]


def train_detector(detector: nn.Module, data: DetectionTrainData, recipe: DetectionRecipe, desc: str = "train",
                   progress: bool = True) -> dict[str, Any]:
    """Train ``detector`` (a torchvision FCOS/RetinaNet) in place; returns the training record."""
    seed_everything(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    params = freeze_backbone_stages(detector, recipe.frozen_stages)
    opt = torch.optim.SGD(params, lr=recipe.lr_at(0), momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    order: list[int] = []
    device = training_device()
    detector.to(device)
    start = time.perf_counter()
    running: dict[str, float] = {}
    detector.train()
    bar = tqdm(total=recipe.steps, desc=desc, disable=not progress or None, leave=False)
    for step in range(recipe.steps):
        if len(order) < recipe.batch_size:
            order += rng.permutation(len(data)).tolist()
        batch, order = order[:recipe.batch_size], order[recipe.batch_size:]
        flips = rng.random(len(batch)) < 0.5 if recipe.hflip else np.zeros(len(batch), dtype=bool)
        images, targets = zip(*(data.sample(i, bool(f)) for i, f in zip(batch, flips)))
        for group in opt.param_groups:
            group["lr"] = recipe.lr_at(step)
        losses = detector([image.to(device) for image in images],
                          [{k: v.to(device) for k, v in target.items()} for target in targets])
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: the training loss became {float(loss)} at step {step}; "
                                     "lower the recipe's lr or raise warmup_steps")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, recipe.grad_clip)
        opt.step()
        for name, value in losses.items():
            value = float(value.detach())
            running[name] = 0.9 * running[name] + 0.1 * value if name in running else value
        bar.update(1)
        bar.set_postfix(loss=f"{sum(running.values()):.3f}")
        if (step + 1) % LOG_EVERY == 0:
            log.info("%s: step %d/%d, loss %.3f, %.0f s", desc, step + 1, recipe.steps, sum(running.values()),
                     time.perf_counter() - start)
    bar.close()
    detector.requires_grad_(True)
    detector.to("cpu")
    detector.eval()
    wall = time.perf_counter() - start
    log.info("%s: %d steps in %.0f s, final losses %s", desc, recipe.steps, wall,
             {k: round(v, 3) for k, v in running.items()})
    return {"train_wall_s": round(wall, 1), "steps": recipe.steps, "recipe": recipe.key(), "trained_on": str(device),
            "final_losses": {k: round(v, 4) for k, v in running.items()}}


def entry_stem(spec: ModelSpec, task_name: str, data_tag: str) -> str:
    """Cache file stem: model, task, recipe and a tag of the training data."""
    return f"{spec.name}__{task_name}__{spec.recipes[task_name].key()}__{data_tag}"


def load_or_train_detector(spec: ModelSpec, task_name: str, detector: nn.Module,
                           train_data: Callable[[], DetectionTrainData],
                           evaluate: Callable[[nn.Module], dict[str, float]], data_tag: str,
                           zoo_dir: str | None = None, progress: bool = True, retrain: bool = False
                           ) -> dict[str, Any]:
    """Fill ``detector`` with cached zoo weights, training and caching them on a miss.

    ``train_data`` is called only on a miss; ``evaluate(detector)`` (the validation mAP of
    the trained ANN) is stored in the sidecar. A corrupt entry (bad hash, unreadable, wrong
    shapes) is reported with a warning, removed and retrained. Returns the record plus
    ``cache``: hit / miss / retrained, and ``path``.
    """
    from snnbench.tasks.zoo.provide import cached_or_trained, check_recipe

    check_recipe(spec, task_name)
    recipe = spec.recipes[task_name]

    def fit() -> dict:
        record = train_detector(detector, train_data(), recipe, desc=f"zoo: {spec.name}/{task_name}",
                                progress=progress)
        start = time.perf_counter()
        record.update({f"val_{k}": round(v, 4) for k, v in evaluate(detector).items()})
        record["eval_wall_s"] = round(time.perf_counter() - start, 1)
        record.update(model=spec.name, task=task_name, data=data_tag, torch=torch.__version__)
        log.info("%s on %s: validation %s", spec.name, task_name,
                 {k: v for k, v in record.items() if k.startswith("val_")})
        return record

    return cached_or_trained(spec, task_name, detector, entry_stem(spec, task_name, data_tag), fit, zoo_dir, retrain)
