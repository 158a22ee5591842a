"""Detection: the COCO reader, COCOMetric, the detector bundle, conversion and counting of
FCOS on variable image sizes, and (slow) one end-to-end cell on generated canvases."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from snnbench.counting import OpCounter
from snnbench.methods.base import ConversionContext
from snnbench.methods.dcgs import DCGS
from snnbench.methods.rate import RateCoding
from snnbench.methods.snn.stats import collect_stats
from snnbench.tasks.base import DataNotFoundError
from snnbench.tasks.data import coco
from snnbench.tasks.data.canvases import generate_canvases, write_coco
from snnbench.tasks.coco_metric import COCOMetric
from snnbench.tasks.detection import COCOTask, DetectorCore, FashionMNISTDetectionTask, detection_bundle
from snnbench.tasks.zoo import get_model_spec, list_models

NAMES = tuple(f"class{i}" for i in range(10))


def _sources(seed: int, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Stand-in 28x28 objects (a bright rectangle each), so the reader tests need no dataset."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for img in images:
        y0, x0 = rng.integers(0, 10, size=2)
        y1, x1 = rng.integers(18, 28, size=2)
        img[y0:y1, x0:x1] = rng.integers(120, 255)
    return images, rng.integers(0, 10, size=n)


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory):
    """A COCO-layout root: 12 val canvases (annotations + PNGs), 10 train canvases."""
    root = tmp_path_factory.mktemp("coco")
    splits = {}
    for split, count, seed in (("val", 12, 2), ("train", 10, 1)):
        canvases = generate_canvases(*_sources(seed), count=count, seed=seed)
        write_coco(canvases, root / split, root / "annotations" / f"instances_{split}.json", NAMES, prefix=split)
        splits[split] = canvases
    return root, splits


def _gt_detections(gt, image_ids):
    out = []
    for image_id in image_ids:
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[image_id]))
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        out.append({"boxes": boxes, "scores": torch.ones(len(anns)),
                    "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)})
    return out


# -- reader ----------------------------------------------------------------------------
def test_coco_json_round_trip_through_the_reader(tiny_coco):
    root, splits = tiny_coco
    data = coco.load_coco(root)
    assert data.calibration_split == "train" and data.evaluation.name == "val"
    assert [im.id for im in data.evaluation.images] == list(range(1, 13))
    boxes = data.evaluation.boxes()
    for item, canvas in zip(data.evaluation.images, splits["val"]):
        assert torch.equal(coco.read_image_uint8(item.path)[0], torch.from_numpy(canvas.image))
        got, labels = boxes[item.id]
        want = np.array([[o.bbox[0], o.bbox[1], o.bbox[0] + o.bbox[2], o.bbox[1] + o.bbox[3]] for o in canvas.objects],
                        dtype=np.float32).reshape(-1, 4)
        np.testing.assert_array_equal(got, want)
        assert labels.tolist() == [o.category for o in canvas.objects]
    image = coco.read_image(data.evaluation.images[0].path)
    assert image.shape == (3, 128, 128) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert len(data.calibration.images) == 10 and data.calibration.boxes()


def test_without_a_train_split_every_tenth_val_image_is_held_out(tiny_coco, tmp_path):
    root, _ = tiny_coco
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text((root / "annotations" / "instances_val.json")
                                                                     .read_text())
    (tmp_path / "val2017").symlink_to(root / "val")
    data = coco.load_coco(tmp_path)
    held = {im.id for im in data.calibration.images}
    evaluated = {im.id for im in data.evaluation.images}
    assert held == {1, 11} and not held & evaluated and len(held | evaluated) == 12
    task = COCOTask(data_root=str(tmp_path))
    assert task.eval_set_size() == 10 and "every 10th" in task.splits()["calibration"]


def test_missing_and_malformed_paths_give_clear_errors(tiny_coco, tmp_path):
    root, _ = tiny_coco
    with pytest.raises(DataNotFoundError, match="--data-root"):
        coco.load_coco(None)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        coco.load_coco(tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match="instances_val2017.json"):
        coco.load_coco(tmp_path)
    with pytest.raises(DataNotFoundError, match="--data-root"):
        COCOTask().check_data()
    (tmp_path / "annotations").mkdir()
    bad = tmp_path / "annotations" / "instances_val2017.json"
    bad.write_text("{not json")
    with pytest.raises(coco.CocoFormatError, match="not valid JSON"):
        coco.load_instances(bad)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(coco.CocoFormatError, match="annotations"):
        coco.load_instances(bad)
    good = json.loads((root / "annotations" / "instances_val.json").read_text())
    good["annotations"][0]["image_id"] = 999
    bad.write_text(json.dumps(good))
    with pytest.raises(coco.CocoFormatError, match="image_id 999"):
        coco.load_instances(bad)
    good = json.loads((root / "annotations" / "instances_val.json").read_text())
    bad.write_text(json.dumps(good))
    with pytest.raises(DataNotFoundError, match="no image directory"):
        coco.load_coco(tmp_path)  # json present, val2017/ missing
    (tmp_path / "val2017").mkdir()
    with pytest.raises(DataNotFoundError, match="does not exist"):
        coco.load_coco(tmp_path)  # images missing from val2017/


def test_missing_hub_weights_name_path_and_url(tiny_coco, tmp_path, monkeypatch):
    root, _ = tiny_coco
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    task = COCOTask(data_root=str(root))
    with pytest.raises(DataNotFoundError) as err:
        task.build("fcos_resnet50_fpn")
    msg = str(err.value)
    assert "fcos_resnet50_fpn_coco-99b0c9b7.pth" in msg and str(tmp_path / "torch") in msg
    assert "https://download.pytorch.org/models/" in msg


# -- metric ----------------------------------------------------------------------------
def test_ground_truth_as_detections_scores_map_one_and_an_empty_step_zero(tiny_coco):
    root, _ = tiny_coco
    gt = coco.load_coco(root).ground_truth()
    metric = COCOMetric(gt)
    ids = gt.getImgIds()
    for batch in (ids[:5], ids[5:]):
        dets = _gt_detections(gt, batch)
        for t in (1, 2, 3):
            metric.update(t, dets, batch)
        empty = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
                 for _ in batch]
        metric.update(4, empty, [{"image_id": i} for i in batch])
    result = metric.compute()
    for t in (1, 2, 3):
        assert result[t]["map"] == pytest.approx(1.0) and result[t]["ap50"] == pytest.approx(1.0)
    assert result[4] == {"map": 0.0, "ap50": 0.0}


def test_metric_keeps_per_image_outcomes_that_rescore_map_at_every_t(tiny_coco):
    root, _ = tiny_coco
    gt = coco.load_coco(root).ground_truth()
    metric = COCOMetric(gt)
    ids = gt.getImgIds()
    torch.manual_seed(0)
    for batch in (ids[:5], ids[5:]):
        dets = _gt_detections(gt, batch)
        noisy = [{**d, "boxes": d["boxes"] + 4 * torch.randn_like(d["boxes"]), "scores": torch.rand(len(d["scores"]))}
                 for d in dets]
        empty = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
                 for _ in batch]
        for t, out in ((1, empty), (2, noisy), (4, dets)):
            metric.update(t, out, batch)
    assert metric.outcomes() is None  # nothing scored yet
    result = metric.compute()
    outcomes = metric.outcomes()
    assert outcomes.t.tolist() == [1, 2, 4] and outcomes.n == len(ids)
    for k, t in enumerate((1, 2, 4)):
        assert outcomes.metric(k)[0] == pytest.approx(result[t]["map"], abs=1e-12)
        assert outcomes.ap50(k)[0] == pytest.approx(result[t]["ap50"], abs=1e-12)
    assert 0.0 < result[2]["map"] < 1.0


def test_metric_scores_only_the_images_it_saw(tiny_coco):
    root, _ = tiny_coco
    gt = coco.load_coco(root).ground_truth()
    metric = COCOMetric(gt)
    metric.update(1, _gt_detections(gt, [1, 2]), [1, 2])  # a subset is still perfect
    assert metric.compute()[1]["map"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="do not list"):
        bad = COCOMetric(gt)
        bad.update(1, _gt_detections(gt, [1]), [999])
        bad.compute()


# -- models, bundle, conversion, counting ----------------------------------------------
def test_detection_models_are_registered_with_their_tasks():
    assert {"fcos_resnet50_fpn", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2"} <= set(list_models(task="coco"))
    assert list_models(task="fmnist_det") == ["fcos_mobilenet_v2"]
    assert COCOTask().default_model() == "fcos_resnet50_fpn"
    assert FashionMNISTDetectionTask.metric == "map" and FashionMNISTDetectionTask.kind == "detection"


@pytest.mark.parametrize("name,builder", [("fcos_resnet50_fpn", "fcos_resnet50_fpn"),
                                          ("retinanet_resnet50_fpn", "retinanet_resnet50_fpn"),
                                          ("retinanet_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2")])
def test_coco_builders_match_torchvision_state_dict_layout(name, builder):
    """The official COCO state dicts load strictly: same keys and shapes as torchvision's builder."""
    import torchvision

    spec = get_model_spec(name)
    ours = spec.build(spec).state_dict()
    theirs = getattr(torchvision.models.detection, builder)(weights=None, weights_backbone=None).state_dict()
    theirs = {k: v for k, v in theirs.items() if not k.endswith("num_batches_tracked")}
    ours = {k: v for k, v in ours.items() if not k.endswith("num_batches_tracked")}
    assert ours.keys() == theirs.keys()
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def _fcos(seed: int = 0):
    """The embedded FCOS-MobileNetV2 architecture, random weights."""
    spec = get_model_spec("fcos_mobilenet_v2")
    torch.manual_seed(seed)
    return spec.build(spec, num_classes=11, pretrained_backbone=False).eval()


def _small_fcos(seed: int = 0):
    """A small FCOS of the same structure (conv-BN-ReLU body with strides 8/16/32, FPN + P6/P7,
    GroupNorm head), so the conversion tests stay fast."""
    from torch import nn
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.fcos import FCOSHead
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    torch.manual_seed(seed)

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU6())

    body = nn.Sequential(block(3, 8), block(8, 16), block(16, 16), block(16, 32), block(32, 32))
    for module in body.modules():  # non-trivial BN statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    backbone = BackboneWithFPN(body, return_layers={"2": "0", "3": "1", "4": "2"}, in_channels_list=[16, 32, 32],
                               out_channels=32, extra_blocks=LastLevelP6P7(32, 32))
    head = FCOSHead(32, 1, 11, num_convs=2)
    return FCOS(backbone, 11, min_size=64, max_size=64, head=head, score_thresh=0.05).eval()


def test_bundle_returns_boxes_in_original_coordinates_for_mixed_sizes():
    bundle = detection_bundle(_fcos(), {})
    torch.manual_seed(0)
    images = [torch.rand(3, 128, 96), torch.rand(3, 100, 128)]
    x, meta = bundle.prepare(images)
    assert x.shape == (2, 3, 128, 128) and meta.original_sizes == [(128, 96), (100, 128)]
    with torch.inference_mode():
        detections = bundle.finish(bundle.core(x), meta)
    assert len(detections) == 2
    for det, (h, w) in zip(detections, meta.original_sizes):
        assert set(det) == {"boxes", "scores", "labels"} and 0 < len(det["boxes"]) <= 100
        assert det["boxes"][:, 2].max() <= w and det["boxes"][:, 3].max() <= h and (det["scores"] > 0.05).all()


def _converted(method, x, T, detector=None):
    core = DetectorCore(detector if detector is not None else _small_fcos())
    ctx = ConversionContext(T=T, example=x)
    stats = collect_stats(core, [x], method.stat_kinds(core, ctx))
    return core, method.convert(core, stats, ctx)


def _head_errors(method, detector, x, steps=(4, 32)):
    """‖decoded SNN head output - ANN‖ / ‖ANN‖ per head output at the given t."""
    core, snn = _converted(method, x, max(steps), detector)
    description = snn.describe()
    assert description["graded_ops"] == ["groupnorm"] and description["neurons"] > 0
    with torch.inference_mode():
        ref = core(x)
        snn.reset()
        err = {t: {k: float((out[k] - ref[k]).norm() / ref[k].norm()) for k in ref}
               for t, out in enumerate(snn.simulate(x, max(steps)), 1) if t in steps}
    assert set(err[max(steps)]) == {"cls_logits", "bbox_regression", "bbox_ctrness"}
    return err


METHODS = [DCGS({"threshold": "max"}), RateCoding({"threshold": "max"})]


@pytest.mark.parametrize("method", METHODS, ids=["differential", "rate"])
def test_snn_head_outputs_approach_the_ann_as_t_grows(method):
    """Backbone, FPN and head all converted (GroupNorm as graded units); every decoded head
    output gets much closer to the ANN's between T=4 and T=32."""
    torch.manual_seed(1)
    err = _head_errors(method, _small_fcos(), torch.randn(2, 3, 64, 64))
    ratio = 0.1 if method.settings.coding == "differential" else 0.5
    for key in err[32]:
        assert err[32][key] < ratio * err[4][key], (key, err)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS, ids=["differential", "rate"])
def test_embedded_fcos_mobilenet_head_outputs_approach_the_ann(method):
    """The same on the full FCOS-MobileNetV2 architecture (80 neurons, 40 GroupNorms)."""
    torch.manual_seed(1)
    err = _head_errors(method, _fcos(), torch.randn(2, 3, 64, 64))
    ratio = 0.1 if method.settings.coding == "differential" else 0.6
    for key in err[32]:
        assert err[32][key] < ratio * err[4][key], (key, err)


def test_counting_works_with_two_image_sizes():
    torch.manual_seed(2)
    small, large = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 96, 128)
    core, snn = _converted(DCGS({"threshold": "max"}), small, 2)
    summaries = []
    for x in (small, large):
        with torch.inference_mode(), OpCounter(snn, 2) as counter:
            snn.reset()
            outputs = list(snn.simulate(x, 2))
            counter.add_samples(2)
            assert all(outputs[-1][k].shape == v.shape for k, v in core(x).items())
        summaries.append(counter.summary())
    for s in summaries:
        assert s.dense_macs > 0 and s.acs[-1] > 0 and s.events[-1] > 0
    assert summaries[1].dense_macs > summaries[0].dense_macs
    assert summaries[1].acs[-1] != summaries[0].acs[-1]
    with torch.inference_mode(), OpCounter(snn, 2) as both:  # one counter over both sizes
        for x in (small, large):
            snn.reset()
            list(snn.simulate(x, 2))
            both.add_samples(2)
    total = both.summary()
    assert total.dense_macs == pytest.approx((summaries[0].dense_macs + summaries[1].dense_macs) / 2)


# -- zoo training and cache --------------------------------------------------------------
def test_detector_zoo_cache_miss_trains_hit_loads_and_corrupt_retrains(tiny_coco, tmp_path, monkeypatch):
    from snnbench.common import cache
    from snnbench.tasks.zoo.detection_training import DetectionRecipe, DetectionTrainData, entry_stem, load_or_train_detector
    from snnbench.tasks.zoo.spec import ModelSpec

    root, splits = tiny_coco
    data = coco.load_coco(root)
    boxes = data.calibration.boxes()
    train = DetectionTrainData([coco.read_image_uint8(im.path) for im in data.calibration.images],
                               [{"boxes": torch.from_numpy(boxes[im.id][0]), "labels": torch.from_numpy(boxes[im.id][1])}
                                for im in data.calibration.images])
    spec = ModelSpec(name="small_fcos", description="", family="detection", tasks=("tiny",),
                     build=lambda spec, **_: _small_fcos(), source="zoo",
                     recipes={"tiny": DetectionRecipe(steps=2, batch_size=2, warmup_steps=1, frozen_stages=1)})
    calls = []

    def evaluate(det):
        calls.append(det.training)
        return {"map": 0.5, "ap50": 0.75}

    first = _small_fcos()
    record = load_or_train_detector(spec, "tiny", first, lambda: train, evaluate, "tag", zoo_dir=tmp_path,
                                    progress=False)
    assert record["cache"] == "miss" and record["val_map"] == 0.5 and record["steps"] == 2 and calls == [False]
    assert all(p.requires_grad for p in first.parameters())
    assert not torch.equal(first.state_dict()["head.classification_head.cls_logits.weight"],
                           _small_fcos().state_dict()["head.classification_head.cls_logits.weight"])

    def no_training(*args, **kwargs):
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr("snnbench.tasks.zoo.detection_training.train_detector", no_training)
    second = _small_fcos()
    assert load_or_train_detector(spec, "tiny", second, lambda: train, evaluate, "tag", zoo_dir=tmp_path)["cache"] == "hit"
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    monkeypatch.undo()
    weights, _ = cache.entry_paths(tmp_path, entry_stem(spec, "tiny", "tag"))
    weights.write_bytes(b"damaged")
    with pytest.warns(UserWarning, match="retraining"):
        again = load_or_train_detector(spec, "tiny", _small_fcos(), lambda: train, evaluate, "tag", zoo_dir=tmp_path,
                                       progress=False)
    assert again["cache"] == "retrained"


def test_training_flip_moves_boxes_with_the_image():
    from snnbench.tasks.zoo.detection_training import DetectionTrainData

    image = torch.zeros(1, 8, 10, dtype=torch.uint8)
    image[0, 2:5, 1:4] = 255
    data = DetectionTrainData([image], [{"boxes": torch.tensor([[1.0, 2.0, 4.0, 5.0]]), "labels": torch.tensor([3])}])
    flipped, target = data.sample(0, flip=True)
    assert flipped.shape == (3, 8, 10) and torch.equal(target["boxes"], torch.tensor([[6.0, 2.0, 9.0, 5.0]]))
    assert flipped[0, 2:5, 6:9].eq(1).all() and flipped.sum() == 27


# -- end to end ------------------------------------------------------------------------
@pytest.mark.slow
def test_fmnist_det_cell_end_to_end(tmp_path, monkeypatch):
    """Tiny canvases, a 2-step zoo recipe, dcgs to T=2 through the runner."""
    from snnbench.cell import CellSpec
    from snnbench.runner import run_cell
    from snnbench.tasks import detection
    from snnbench.tasks.data import fashion_mnist
    from snnbench.tasks.zoo import model_registry
    from snnbench.tasks.zoo.detection_training import DetectionRecipe

    if not fashion_mnist.DEBIAN_DIR.is_dir():
        pytest.skip("Debian dataset-fashion-mnist not installed")
    monkeypatch.setenv("SNNBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(detection, "FMNIST_DET_TRAIN_CANVASES", 24)
    monkeypatch.setattr(detection, "FMNIST_DET_VAL_CANVASES", 8)
    registry = model_registry()
    spec = registry.get("fcos_mobilenet_v2")
    quick = dataclasses.replace(spec, recipes={"fmnist_det": DetectionRecipe(steps=2, batch_size=4, warmup_steps=1)})
    entry = registry._entries["fcos_mobilenet_v2"]
    monkeypatch.setitem(registry._entries, "fcos_mobilenet_v2", dataclasses.replace(entry, obj=quick))
    result = run_cell(CellSpec(method="dcgs", task="fmnist_det", model="fcos_mobilenet_v2", T=2, calib_size=8,
                               calib_batch_size=8, batch_size=4))
    assert result["status"] == "ok", result["error"]
    assert result["metric"] == "map" and 0.0 <= result["ann"] <= 1.0
    assert set(result["per_t"]) == {"1", "2"} and result["eval_samples"] == 8
    for row in result["per_t"].values():
        assert 0.0 <= row["map"] <= 1.0 and "ap50" in row and row["energy_ratio"] > 0
    assert result["provenance"]["splits"] == {"calibration": "train", "evaluation": "val"}
