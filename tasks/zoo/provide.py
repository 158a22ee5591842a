"""Load a zoo model from the cache, or train it (once) and cache it."""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable

import torch
from torch import nn

from snnbench.common import cache
from snnbench.common.filelock import file_lock
from snnbench.common.hashing import sha256_file
from snnbench.tasks.base import DataNotFoundError
from snnbench.tasks.data.arrays import ImageArrays
from snnbench.tasks.zoo import reference, zoo_dir as default_zoo_dir
from snnbench.tasks.zoo.spec import ModelSpec
from snnbench.tasks.zoo.training import train_classifier
from snnbench.tasks.zoo.weights import load_into

log = logging.getLogger(__name__)


def entry_stem(spec: ModelSpec, task_name: str) -> str:
    recipe = spec.recipes[task_name]
    return f"{spec.name}__{task_name}__{recipe.key()}"


def check_recipe(spec: ModelSpec, task_name: str) -> None:
    """A clear error when the zoo cannot train ``spec`` on ``task_name``."""
    if task_name not in spec.recipes:
        raise DataNotFoundError(f"the zoo has no training recipe for {spec.name} on {task_name}; "
                                f"it trains on: {', '.join(spec.recipes)}. Pass --weights FILE instead")


def cached_or_trained(spec: ModelSpec, task_name: str, model: nn.Module, stem: str, train: Callable[[], dict],
                      zoo_dir: str | None = None, retrain: bool = False) -> dict[str, Any]:
    """The zoo's cache protocol, shared by every kind of model it trains.

    First the shipped reference checkpoint for ``stem`` (:mod:`~snnbench.tasks.zoo.reference`,
    sha256-pinned; skipped with ``retrain`` or ``$SNNBENCH_ZOO_REFERENCE=off``). Then,
    under an exclusive lock on the entry: load ``<stem>.pt`` from the user's zoo cache into
    ``model`` when present and valid (a hit); otherwise call ``train()``, which trains
    ``model`` in place and returns the record to store beside the weights. A corrupt cache
    entry (bad hash, unreadable, wrong shapes) is reported with a warning, removed and
    retrained; ``retrain`` removes it first. ``model`` is left in eval mode. Returns the
    record plus ``cache`` (reference / hit / miss / retrained), ``path`` and ``sha256``.
    """
    check_recipe(spec, task_name)
    if reference.enabled() and not retrain:
        shipped = reference.load(stem)
        if shipped is not None:
            state, record = shipped
            load_into(model, state, origin=record["path"])
            model.eval()
            return dict(record, cache="reference")
    directory = default_zoo_dir(zoo_dir)
    weights_path = directory / f"{stem}.pt"
    with file_lock(directory / f"{stem}.lock"):  # two processes never train the same entry
        status = "miss"
        if retrain:
            cache.remove_entry(directory, stem)
        else:
            try:
                found = cache.load_entry(directory, stem)
                if found is not None:
                    state, record = found
                    load_into(model, state, origin=str(weights_path))
                    model.eval()
                    return dict(record, cache="hit", path=str(weights_path))  # record holds sha256
            except (cache.CorruptCacheError, DataNotFoundError) as err:
                warnings.warn(f"{err}; retraining {spec.name} on {task_name}", stacklevel=3)
                cache.remove_entry(directory, stem)
                status = "retrained"
        log.info("training %s on %s (cache %s in %s)", spec.name, task_name, status, directory)
        record = train()
        model.eval()
        path = cache.save_entry(directory, stem, model.state_dict(), record)
        return dict(record, cache=status, path=str(path), sha256=sha256_file(path))


def load_or_train(spec: ModelSpec, task_name: str, model: nn.Module, train: ImageArrays, test: ImageArrays,
                  zoo_dir: str | None = None, progress: bool = True, retrain: bool = False) -> dict[str, Any]:
    """Fill a classifier with cached zoo weights, training and caching them on a miss
    (:func:`cached_or_trained`)."""
    check_recipe(spec, task_name)

    def fit() -> dict:
        record = train_classifier(model, train, test, spec.recipes[task_name], desc=f"zoo: {spec.name}/{task_name}",
                                  progress=progress)
        return dict(record, model=spec.name, task=task_name, torch=torch.__version__)

    return cached_or_trained(spec, task_name, model, entry_stem(spec, task_name), fit, zoo_dir, retrain)
