"""Shipped, sha256-pinned reference checkpoints: used by default, verified, never silently replaced."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from snnbench.tasks.classification import DigitsTask
from snnbench.common import cache
from snnbench.common.hashing import sha256_file
from snnbench.tasks.zoo import get_model_spec, reference
from snnbench.tasks.zoo.provide import entry_stem, load_or_train
from snnbench.tasks.zoo.spec import TrainRecipe


@pytest.fixture
def quick_spec():
    spec = get_model_spec("vgg_small")
    return dataclasses.replace(spec, recipes={"digits": TrainRecipe(epochs=1, batch_size=64, lr=0.05)})


@pytest.fixture
def shipped_dir(tmp_path, monkeypatch):
    """An empty reference directory standing in for the package's."""
    path = tmp_path / "reference"
    monkeypatch.setattr(reference, "_PACKAGE_DIR", path)
    monkeypatch.delenv(reference.ENV_VAR, raising=False)
    return path


def _fresh(spec, task):
    test = task.split("test")
    return spec.build(spec, in_shape=test.shape, num_classes=test.num_classes)


def _train_and_publish(spec, task, zoo_dir):
    model = _fresh(spec, task)
    rec = load_or_train(spec, "digits", model, task.split("train"), task.split("test"), zoo_dir=zoo_dir,
                        progress=False)
    stem = entry_stem(spec, "digits")
    reference.publish(stem, cache.entry_paths(zoo_dir, stem)[0], rec)
    return model, stem


def test_reference_is_loaded_before_cache_and_training(tmp_path, shipped_dir, quick_spec, monkeypatch):
    task = DigitsTask()
    trained, stem = _train_and_publish(quick_spec, task, tmp_path / "zoo-a")
    pinned = json.loads((shipped_dir / "manifest.json").read_text())[stem]
    assert pinned["sha256"] == sha256_file(shipped_dir / f"{stem}.pt")

    def no_training(*a, **k):
        raise AssertionError("a shipped reference must not be retrained")

    monkeypatch.setattr("snnbench.tasks.zoo.provide.train_classifier", no_training)
    other_zoo = tmp_path / "zoo-b"  # another user's empty cache: the same ANN all the same
    loaded = _fresh(quick_spec, task)
    rec = load_or_train(quick_spec, "digits", loaded, task.split("train"), task.split("test"), zoo_dir=other_zoo)
    assert rec["cache"] == "reference" and rec["sha256"] == pinned["sha256"]
    assert rec["test_top1"] == pinned["record"]["test_top1"]
    for a, b in zip(trained.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    assert not other_zoo.exists() or not any(other_zoo.glob("*.pt"))


def test_tampered_reference_is_an_error_not_a_silent_retrain(tmp_path, shipped_dir, quick_spec, monkeypatch):
    task = DigitsTask()
    _, stem = _train_and_publish(quick_spec, task, tmp_path / "zoo")
    path = shipped_dir / f"{stem}.pt"
    state = torch.load(path, weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 1e-3
    torch.save(state, path)
    with pytest.raises(cache.CorruptCacheError, match=reference.ENV_VAR):
        load_or_train(quick_spec, "digits", _fresh(quick_spec, task), task.split("train"), task.split("test"),
                      zoo_dir=tmp_path / "zoo")
    path.unlink()
    with pytest.raises(cache.CorruptCacheError, match="missing"):
        load_or_train(quick_spec, "digits", _fresh(quick_spec, task), task.split("train"), task.split("test"),
                      zoo_dir=tmp_path / "zoo")


def test_reference_can_be_turned_off_and_force_retrains(tmp_path, shipped_dir, quick_spec, monkeypatch):
    task = DigitsTask()
    _train_and_publish(quick_spec, task, tmp_path / "zoo")
    monkeypatch.setenv(reference.ENV_VAR, "off")
    rec = load_or_train(quick_spec, "digits", _fresh(quick_spec, task), task.split("train"), task.split("test"),
                        zoo_dir=tmp_path / "zoo")
    assert rec["cache"] == "hit"  # the user's own cache
    monkeypatch.delenv(reference.ENV_VAR)
    rec = load_or_train(quick_spec, "digits", _fresh(quick_spec, task), task.split("train"), task.split("test"),
                        zoo_dir=tmp_path / "zoo", progress=False, retrain=True)
    assert rec["cache"] == "miss" and rec["sha256"] == sha256_file(cache.entry_paths(
        tmp_path / "zoo", entry_stem(quick_spec, "digits"))[0])


def test_every_shipped_checkpoint_matches_its_pin_and_a_current_zoo_entry():
    """The repository's own reference directory: files present, hashes pinned, stems live."""
    entries = reference.manifest()
    for stem, entry in entries.items():
        state, record = reference.load(stem)
        assert record["sha256"] == entry["sha256"] and isinstance(state, dict) and state
        name, task_name = stem.split("__")[:2]
        spec = get_model_spec(name)
        assert task_name in spec.recipes, stem
        if spec.family == "classification":  # canvas-task stems also carry a data digest
            assert stem == entry_stem(spec, task_name), "recipe changed: regenerate with bench zoo train --force --reference"
