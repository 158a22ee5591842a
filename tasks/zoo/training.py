"""The zoo's training loop for the small embedded-default classifiers.

SGD with Nesterov momentum (or AdamW) under a OneCycle schedule, optional horizontal
flips, fixed seeds: the recipe of docs/datasets-and-weights.md §4.1 (VGG-small reached
92.75 % on Fashion-MNIST after 4 epochs, ~3 min on 2 cores).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from snnbench.tasks.data.arrays import ImageArrays
from snnbench.tasks.zoo.spec import TrainRecipe

log = logging.getLogger(__name__)

#: the device the zoo trains on (``bench zoo train --device`` sets it); evaluation, caching and
#: everything after training happen on the CPU, so a checkpoint does not depend on it
TRAIN_DEVICE_ENV = "SNNBENCH_TRAIN_DEVICE"


def training_device() -> torch.device:
    """``$SNNBENCH_TRAIN_DEVICE`` (cpu, cuda, cuda:N), default cpu."""
    device = torch.device(os.environ.get(TRAIN_DEVICE_ENV) or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{TRAIN_DEVICE_ENV}={device} but CUDA is not available; train on cpu")
    return device


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch RNGs."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.inference_mode()
def evaluate_top1(model: nn.Module, data: ImageArrays, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` on all of ``data``."""
    model.eval()
    correct = 0
    for x, y in data.batches(np.arange(len(data)), batch_size):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / len(data)


def train_classifier(model: nn.Module, train: ImageArrays, test: ImageArrays, recipe: TrainRecipe,
                     desc: str = "train", progress: bool = True) -> dict[str, Any]:
    """Train ``model`` in place; returns a record with the test accuracy and wall time.

    Parameters are re-initialised from the recipe's seed first, so the result does not
    depend on how the model was constructed.
    """
    seed_everything(recipe.seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    rng = np.random.default_rng(recipe.seed)
    steps_per_epoch = (len(train) + recipe.batch_size - 1) // recipe.batch_size
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True,
                              weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, epochs=recipe.epochs,
                                                steps_per_epoch=steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    device = training_device()
    model.to(device)
    start = time.perf_counter()
    bar = tqdm(total=recipe.epochs * steps_per_epoch, desc=desc, disable=not progress or None, leave=False)
    for epoch in range(recipe.epochs):
        model.train()
        order = rng.permutation(len(train))
        running = 0.0
        for step, (x, y) in enumerate(train.batches(order, recipe.batch_size)):
            if recipe.hflip:
                flip = torch.from_numpy(rng.random(len(x)) < 0.5)
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            loss = loss_fn(model(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running = 0.9 * running + 0.1 * float(loss.detach()) if step else float(loss.detach())
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{running:.3f}")
    bar.close()
    model.to("cpu")
    acc = evaluate_top1(model, test)
    wall = time.perf_counter() - start
    log.info("%s: test top-1 %.4f after %d epochs (%.0f s)", desc, acc, recipe.epochs, wall)
    return {"test_top1": acc, "train_wall_s": round(wall, 1), "epochs": recipe.epochs, "recipe": recipe.key(),
            "trained_on": str(device)}
