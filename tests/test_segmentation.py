"""Segmentation: the VOC reader, mIoU from a confusion matrix at every t, the transforms,
the segmentation zoo, and conversion of FCN/DeepLabv3-style networks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from snnbench.methods.base import ConversionContext
from snnbench.methods.dcgs import DCGS
from snnbench.methods.rate import RateCoding
from snnbench.methods.snn.graph import build_network_graph
from snnbench.methods.snn.stats import collect_stats
from snnbench.tasks.base import DataNotFoundError, ModelBundle
from snnbench.tasks.data import voc
from snnbench.tasks.data.canvases import CanvasDataset, ensure_canvases
from snnbench.tasks.data.voc import collate
from snnbench.tasks.miou_metric import ConfusionMIoU
from snnbench.tasks.segmentation import CanvasCounts, FashionMNISTSegmentationTask, VOCTask
from snnbench.tasks.segmentation_transform import SegmentationTransform
from snnbench.tasks.zoo import get_model_spec, list_models
from snnbench.tasks.zoo.spec import TrainRecipe


# -- metric -----------------------------------------------------------------------------
def miou_of(pred, target, num_classes, t=1):
    metric = ConfusionMIoU(num_classes)
    metric.update(t, torch.tensor(pred).view(1, 1, -1), torch.tensor(target).view(1, 1, -1))
    return metric.compute()[t]


def test_ground_truth_as_prediction_scores_one():
    target = torch.randint(0, 21, (2, 9, 7))
    target[:, 0, :] = 255  # a border of ignored pixels: what the prediction says there does not matter
    pred = target.clamp(max=20)
    pred[:, 0, :] = torch.randint(0, 21, (2, 7))
    metric = ConfusionMIoU(21)
    for t in (1, 2, 3):
        metric.update(t, pred, target)
    assert metric.compute() == {t: {"miou": 1.0, "pixel_acc": 1.0} for t in (1, 2, 3)}


def test_hand_computed_confusion():
    # pixels (truth -> prediction): 0->0, 0->1, 1->1, 1->1, 2->0, 255->2 (ignored)
    # confusion (rows truth, columns prediction):  [[1, 1, 0],
    #                                               [0, 2, 0],
    #                                               [1, 0, 0]]
    # IoU_0 = 1 / (2 + 2 - 1) = 1/3;  IoU_1 = 2 / (2 + 3 - 2) = 2/3;  IoU_2 = 0 / (1 + 0 - 0) = 0
    # mIoU = (1/3 + 2/3 + 0) / 3 = 1/3;  pixel accuracy = (1 + 2) / 5 = 3/5
    scores = miou_of([0, 1, 1, 1, 0, 2], [0, 0, 1, 1, 2, 255], 3)
    assert scores["miou"] == pytest.approx(1 / 3)
    assert scores["pixel_acc"] == pytest.approx(3 / 5)
    metric = ConfusionMIoU(3)
    metric.update(1, torch.tensor([[0, 1, 1, 1, 0, 2]]), torch.tensor([[0, 0, 1, 1, 2, 255]]))
    assert metric.confusion(1).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_classes_absent_from_truth_and_prediction_are_left_out():
    # 5 classes, only 0 and 1 occur: truth [0, 0, 1, 1], prediction [0, 1, 1, 1]
    # IoU_0 = 1 / (2 + 1 - 1) = 1/2;  IoU_1 = 2 / (2 + 3 - 2) = 2/3;  classes 2..4 have no union
    # mIoU = (1/2 + 2/3) / 2 = 7/12 (not divided by 5)
    assert miou_of([0, 1, 1, 1], [0, 0, 1, 1], 5)["miou"] == pytest.approx(7 / 12)
    # a class only predicted (never true) has IoU 0 and counts: truth [0, 0], prediction [0, 3]
    # IoU_0 = 1 / (2 + 1 - 1) = 1/2;  IoU_3 = 0 / (0 + 1 - 0) = 0  ->  mIoU = 1/4
    assert miou_of([0, 3], [0, 0], 5)["miou"] == pytest.approx(1 / 4)


def test_counts_accumulate_over_batches_per_time_step():
    metric = ConfusionMIoU(2)
    # t=1: batch A truth [0, 1] pred [0, 1]; batch B truth [1, 1] pred [0, 1]
    #      confusion [[1, 0], [1, 2]] -> IoU_0 = 1/(1+2-1) = 1/2, IoU_1 = 2/(3+2-2) = 2/3, mIoU 7/12, acc 3/4
    # t=2: both batches perfect -> 1.0
    a_t, b_t = torch.tensor([[0, 1]]), torch.tensor([[1, 1]])
    metric.update(1, torch.tensor([[0, 1]]), a_t)
    metric.update(2, torch.tensor([[0, 1]]), a_t)
    metric.update(1, torch.tensor([[0, 1]]), b_t)
    metric.update(2, torch.tensor([[1, 1]]), b_t)
    out = metric.compute()
    assert out[1]["miou"] == pytest.approx(7 / 12) and out[1]["pixel_acc"] == pytest.approx(3 / 4)
    assert out[2] == {"miou": 1.0, "pixel_acc": 1.0}
    assert metric._confusion[1].dtype == torch.int64


def test_ignore_index_is_respected_and_bad_inputs_raise():
    target = torch.tensor([[0, 1, 255, 255]])
    a = ConfusionMIoU(2)
    a.update(1, torch.tensor([[0, 1, 0, 0]]), target)
    b = ConfusionMIoU(2)
    b.update(1, torch.tensor([[0, 1, 1, 1]]), target)
    assert a.compute() == b.compute() == {1: {"miou": 1.0, "pixel_acc": 1.0}}
    with pytest.raises(ValueError, match="no labelled pixels"):
        only_ignored = ConfusionMIoU(2)
        only_ignored.update(1, torch.zeros(1, 2, dtype=torch.int64), torch.full((1, 2), 255))
        only_ignored.compute()
    with pytest.raises(ValueError, match="same shape"):
        ConfusionMIoU(2).update(1, torch.zeros(1, 2, 2, dtype=torch.int64), torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="class indices"):
        ConfusionMIoU(2).update(1, torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))


# -- transforms -------------------------------------------------------------------------
def test_prepare_pads_and_finish_returns_masks_at_their_own_resolution():
    torch.manual_seed(0)
    masks = [torch.randint(0, 4, (10, 12)), torch.randint(0, 4, (8, 8))]
    images = [torch.randint(0, 256, (3, *m.shape), dtype=torch.uint8) for m in masks]
    transform = SegmentationTransform(resize=None)
    x, meta = transform.prepare(images)
    assert x.shape == (2, 3, 10, 12) and meta.target_shape == (10, 12)
    assert torch.all(x[1, :, 8:, :] == 0) and torch.all(x[1, :, :, 8:] == 0)  # zero = mean colour padding
    # logits that are the one-hot masks (padded): finish gives the masks back, 0 outside image 2
    logits = torch.zeros(2, 4, 10, 12)
    for i, m in enumerate(masks):
        logits[i, :, : m.shape[0], : m.shape[1]] = torch.nn.functional.one_hot(m, 4).permute(2, 0, 1).float()
    pred = transform.finish(logits, meta)
    _, targets = collate([voc.VOCSample(str(i), img, m) for i, (img, m) in enumerate(zip(images, masks))])
    assert pred.shape == targets.shape == (2, 10, 12)
    assert torch.equal(pred[0], masks[0]) and torch.equal(pred[1, :8, :8], masks[1])
    assert torch.all(targets[1, 8:, :] == 255) and torch.all(targets[1, :, 8:] == 255)
    metric = ConfusionMIoU(4)
    metric.update(1, pred, targets)
    assert metric.compute()[1]["miou"] == 1.0


def test_resize_follows_the_shorter_side_and_predictions_come_back_to_the_mask_size():
    transform = SegmentationTransform(resize=20)
    images = [torch.zeros(3, 10, 15, dtype=torch.uint8), torch.zeros(3, 12, 10, dtype=torch.uint8)]
    x, meta = transform.prepare(images)
    assert meta.resized == [(20, 30), (24, 20)] and x.shape == (2, 3, 24, 30)
    assert meta.original == [(10, 15), (12, 10)] and meta.target_shape == (12, 15)
    logits = torch.zeros(2, 3, 24, 30)
    logits[:, 2] = 1.0
    pred = transform.finish(logits, meta)
    assert pred.shape == (2, 12, 15)
    assert torch.all(pred[0, :10, :15] == 2) and torch.all(pred[1, :12, :10] == 2)
    calib = transform.calibration_input(images)
    assert calib.shape == (2, 3, 20, 20)


# -- the VOC reader ---------------------------------------------------------------------
def write_voc_tree(root, ids, size=(20, 24), with_train=(), colour_mask_ids=(), num_classes=21, seed=0):
    """A tiny VOC tree: JPEG images, palette masks with a 255 border, split lists."""
    rng = np.random.default_rng(seed)
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True, exist_ok=True)
    palette = voc.voc_colormap().reshape(-1).tolist()
    masks = {}
    for image_id in list(ids) + list(with_train):
        h, w = size
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{image_id}.jpg")
        mask = rng.integers(0, num_classes, (h, w)).astype(np.uint8)
        mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 255
        masks[image_id] = mask
        if image_id in colour_mask_ids:
            Image.fromarray(voc.voc_colormap()[mask]).save(root / "SegmentationClass" / f"{image_id}.png")
        else:
            img = Image.fromarray(mask, mode="P")
            img.putpalette(palette)
            img.save(root / "SegmentationClass" / f"{image_id}.png")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids) + "\n")
    if with_train:
        (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(with_train) + "\n")
    return masks


def test_voc_reader_on_a_hand_made_tree_with_jpg_images_and_ignore_borders(tmp_path):
    ids = [f"2007_{i:06d}" for i in range(12)]
    masks = write_voc_tree(tmp_path / "VOCdevkit" / "VOC2012", ids, colour_mask_ids={ids[3]})
    splits = voc.split_ids(tmp_path)  # finds VOCdevkit/VOC2012
    # no train.txt: every 10th val image calibrates and is left out of evaluation
    assert splits.calibration == [ids[0], ids[10]] and splits.calibration_split == "val every 10th image"
    assert set(splits.calibration).isdisjoint(splits.evaluation) and len(splits.evaluation) == 10
    data = voc.VOCSegmentation(splits.root, ids, 21)
    for k in (1, 3):  # a palette mask and an RGB colour mask read back as the same indices
        sample = data[k]
        assert sample.image.shape == (3, 20, 24) and sample.image.dtype == torch.uint8
        assert torch.equal(sample.mask, torch.from_numpy(masks[ids[k]].astype(np.int64)))
        assert torch.all(sample.mask[0] == 255)
    task = VOCTask(data_root=str(tmp_path))
    assert task.eval_set_size() == 10 and task.splits()["calibration"] == "val every 10th image"
    bundle = ModelBundle(core=torch.nn.Identity(), info={"transform": SegmentationTransform(resize=32)})
    (calib,) = list(task.calib_batches(5, 100, 0, bundle))
    assert calib.shape == (2, 3, 32, 32)
    batches = list(task.eval_batches(None, 4, bundle))
    assert [len(images) for images, _ in batches] == [4, 4, 2]
    # ground truth as the prediction scores 1.0 through the task's metric
    metric = task.new_metric()
    for _, targets in batches:
        metric.update(1, targets.clamp(max=20), targets)
    assert metric.compute()[1]["miou"] == 1.0


def test_voc_calibration_comes_from_train_txt_without_val_images(tmp_path):
    write_voc_tree(tmp_path, ["a", "b", "c"], with_train=("t1", "t2", "b"))
    splits = voc.split_ids(tmp_path)
    assert splits.calibration == ["t1", "t2"] and splits.evaluation == ["a", "b", "c"]
    assert splits.calibration_split == "train"


def test_missing_voc_paths_give_clear_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="--data-root"):
        VOCTask().check_data()
    with pytest.raises(DataNotFoundError, match="does not exist"):
        VOCTask(data_root=str(tmp_path / "nowhere")).check_data()
    with pytest.raises(DataNotFoundError, match="ImageSets/Segmentation"):
        VOCTask(data_root=str(tmp_path)).check_data()
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="val.txt"):
        VOCTask(data_root=str(tmp_path)).check_data()
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("x1\nx2\n")
    with pytest.raises(DataNotFoundError, match=r"JPEGImages/x2\.jpg"):
        VOCTask(data_root=str(tmp_path)).check_data()
    write_voc_tree(tmp_path, ["x1", "x2"])
    (tmp_path / "SegmentationClass" / "x2.png").unlink()
    with pytest.raises(DataNotFoundError, match=r"SegmentationClass/x2\.png"):
        voc.VOCSegmentation(tmp_path, ["x2"], 21)[0]
    Image.fromarray(np.full((20, 24), 30, np.uint8)).save(tmp_path / "SegmentationClass" / "x2.png")
    with pytest.raises(DataNotFoundError, match=r"labels \[30\]"):
        voc.VOCSegmentation(tmp_path, ["x2"], 21)[0]
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "SegmentationClass" / "x2.png")
    with pytest.raises(DataNotFoundError, match="must match"):
        voc.VOCSegmentation(tmp_path, ["x2"], 21)[0]


def test_missing_torchvision_weights_name_the_path_and_url(tmp_path, monkeypatch):
    write_voc_tree(tmp_path / "voc", ["a"])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(DataNotFoundError) as err:
        VOCTask(data_root=str(tmp_path / "voc")).build("deeplabv3_resnet50")
    message = str(err.value)
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "deeplabv3_resnet50_coco-cd0a2569.pth") in message
    assert "https://download.pytorch.org/models/deeplabv3_resnet50_coco-cd0a2569.pth" in message
    with pytest.raises(ValueError, match="does not fit task"):
        VOCTask(data_root=str(tmp_path / "voc")).build("fcn_mobilenet_v2")


def test_torchvision_weights_with_an_aux_head_load_into_the_logits_wrapper(tmp_path):
    torch.manual_seed(0)
    full = torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None, aux_loss=True)
    path = tmp_path / "fcn_resnet50_coco-1167a1af.pth"
    torch.save(full.state_dict(), path)  # torchvision's files hold the aux head; aux_loss is off here
    write_voc_tree(tmp_path / "voc", ["a", "b"])
    bundle = VOCTask(data_root=str(tmp_path / "voc")).build("fcn_resnet50", weights=str(path))
    assert bundle.core.model.aux_classifier is None
    assert torch.equal(bundle.core.model.classifier[4].weight, full.classifier[4].weight)
    x = torch.randn(1, 3, 40, 48)
    with torch.inference_mode():
        assert torch.equal(bundle.core(x), full.eval()(x)["out"])


# -- fmnist_seg ------------------------------------------------------------------------
@pytest.fixture()
def small_canvases(tmp_path, monkeypatch):
    """fmnist_seg with 24 training and 12 validation canvases under tmp_path."""
    monkeypatch.setenv("SNNBENCH_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(FashionMNISTSegmentationTask, "counts", CanvasCounts(train=24, val=12))
    return tmp_path / "fmnist_seg"


def test_generated_canvases_read_back_through_the_voc_reader(small_canvases):
    root = ensure_canvases(small_canvases, CanvasDataset("voc", 24, 12))
    splits = voc.split_ids(root)
    assert (len(splits.calibration), len(splits.evaluation), splits.calibration_split) == (24, 12, "train")
    assert splits.calibration[0].startswith("train_") and splits.evaluation[0].startswith("val_")
    sample = voc.VOCSegmentation(root, splits.evaluation, 11)[0]
    assert sample.image.shape == (3, 128, 128) and sample.mask.shape == (128, 128)
    assert torch.equal(sample.image[0], sample.image[1])  # grey canvases read as RGB
    assert int(sample.mask.max()) <= 10 and (sample.mask > 0).any()
    task = FashionMNISTSegmentationTask()
    assert task.voc_splits().root == root and task.eval_set_size() == 12
    assert task.splits() == {"calibration": "train", "evaluation": "val"}
    bundle = ModelBundle(core=torch.nn.Identity(), info={"transform": task.transform()})
    images, targets = next(task.eval_batches(5, 5, bundle))
    x, meta = task.transform().prepare(images)
    assert x.shape == (5, 3, 128, 128) and targets.shape == (5, 128, 128)
    one_hot = torch.nn.functional.one_hot(targets, 11).permute(0, 3, 1, 2).float()
    metric = task.new_metric()
    metric.update(1, task.transform().finish(one_hot, meta), targets)
    assert metric.compute()[1] == {"miou": 1.0, "pixel_acc": 1.0}
    assert next(task.calib_batches(8, 4, 0, bundle)).shape == (4, 3, 128, 128)


def test_segmentation_models_are_registered_for_their_tasks():
    assert {"fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101"} <= set(
        list_models(task="voc"))
    assert list_models(task="fmnist_seg") == ["fcn_mobilenet_v2"]
    spec = get_model_spec("fcn_mobilenet_v2")
    assert spec.family == "segmentation" and spec.source == "zoo" and "fmnist_seg" in spec.recipes
    for name in list_models(task="voc"):
        tv = get_model_spec(name)
        weights = torchvision.models.get_weight(tv.weights)
        assert len(weights.meta["categories"]) == 21 and tv.weights.endswith("COCO_WITH_VOC_LABELS_V1")
    net = spec.build(spec, num_classes=11).eval()
    with torch.inference_mode():
        assert net(torch.randn(2, 3, 64, 64)).shape == (2, 11, 64, 64)


def test_backbone_starts_from_the_packaged_imagenet_mobilenet_v2():
    from snnbench.tasks.zoo.segmentation_training import init_from_imagenet_backbone
    from snnbench.tasks.zoo.weights import load_state_dict_file, package_mobilenet_v2_path

    spec = get_model_spec("fcn_mobilenet_v2")
    net = spec.build(spec, num_classes=11)
    init_from_imagenet_backbone(net, seed=0)
    reference = load_state_dict_file(package_mobilenet_v2_path())
    assert torch.equal(net.features[13].conv[0][0].weight, reference["features.13.conv.0.0.weight"])
    head = net.classifier.weight.clone()
    init_from_imagenet_backbone(net, seed=0)
    assert torch.equal(net.classifier.weight, head)  # the head's initialisation is seeded


def test_zoo_trains_once_then_loads_and_retrains_a_corrupt_entry(small_canvases, tmp_path):
    from snnbench.tasks.zoo.segmentation_training import load_or_train_segmenter

    base = get_model_spec("fcn_mobilenet_v2")
    spec = dataclasses.replace(base, recipes={"fmnist_seg": TrainRecipe(epochs=1, batch_size=12, optimizer="adamw",
                                                                      lr=2e-3, hflip=True)})
    task = FashionMNISTSegmentationTask()
    zoo = str(tmp_path / "zoo")
    first = load_or_train_segmenter(spec, task, spec.build(spec, num_classes=11), zoo_dir=zoo, progress=False)
    assert first["cache"] == "miss" and first["steps"] == 2 and 0 <= first["val_miou"] <= 1
    net = spec.build(spec, num_classes=11)
    second = load_or_train_segmenter(spec, task, net, zoo_dir=zoo, progress=False)
    assert second["cache"] == "hit" and second["val_miou"] == first["val_miou"]
    saved = torch.load(first["path"], weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in net.state_dict().items())
    with open(first["path"], "ab") as f:
        f.write(b"garbage")
    with pytest.warns(UserWarning, match="retraining"):
        third = load_or_train_segmenter(spec, task, spec.build(spec, num_classes=11), zoo_dir=zoo, progress=False)
    assert third["cache"] == "retrained" and third["val_miou"] == pytest.approx(first["val_miou"])


def test_fmnist_seg_cell_runs_end_to_end_with_given_weights(small_canvases, tmp_path):
    from snnbench.cell import CellSpec
    from snnbench.runner import run_cell

    spec = get_model_spec("fcn_mobilenet_v2")
    torch.manual_seed(0)
    path = tmp_path / "random.pt"
    torch.save(spec.build(spec, num_classes=11).state_dict(), path)
    # threshold=max: threshold iteration (the default) costs minutes for MobileNetV2's ~6k channels
    result = run_cell(CellSpec(method="dcgs", task="fmnist_seg", model="fcn_mobilenet_v2", T=2, calib_size=4,
                               eval_size=4, batch_size=2, weights=str(path), settings={"threshold": "max"}))
    assert result["status"] == "ok", result["error"]
    assert result["metric"] == "miou" and 0 <= result["ann"] <= 1
    assert set(result["ann_metrics"]) == {"miou", "pixel_acc"} and result["eval_samples"] == 4
    for t in ("1", "2"):
        row = result["per_t"][t]
        assert row["metric"] == row["miou"] and 0 <= row["pixel_acc"] <= 1 and row["energy_ratio"] > 0
    assert result["provenance"]["splits"] == {"calibration": "train", "evaluation": "val"}


# -- conversion -------------------------------------------------------------------------
def relative_errors(model, x, method, steps=(4, 32)):
    """‖SNN_t - ANN‖ / ‖ANN - bias‖ at the given t (thresholds from the batch maximum).

    The output bias is subtracted from the denominator: with random weights it would
    otherwise dominate the logits and hide the error."""
    ctx = ConversionContext(T=max(steps), example=x)
    stats = collect_stats(model, [x], method.stat_kinds(model, ctx))
    snn = method.convert(model, stats, ctx)
    with torch.inference_mode():
        ref = model(x)
        scale = (ref - ref.mean(dim=(0, 2, 3), keepdim=True)).norm()
        snn.reset()
        return {t: float((out - ref).norm() / scale) for t, out in enumerate(snn.simulate(x, max(steps)), 1)
                if t in steps}


def randomise_batchnorm(model, seed=0):
    """Random running statistics and affine parameters, so activations are not trivially scaled."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=gen) * 0.1)
    return model.eval()


def method_for(coding):
    return DCGS({"threshold": "max"}) if coding == "differential" else RateCoding({"threshold": "max"})


def check_convergence(err, coding, rate_ratio=0.5):
    """Differential coding converges ~1/T; rate coding much more slowly, and more slowly the
    deeper the network (its error compounds layer by layer), hence the per-model ratio."""
    if coding == "differential":
        assert err[32] < 0.1 * err[4], err
    else:
        assert err[32] < rate_ratio * err[4], err


@pytest.mark.parametrize("coding", ["differential", "rate"])
def test_fcn_mobilenet_v2_logits_approach_the_ann(coding):
    spec = get_model_spec("fcn_mobilenet_v2")
    torch.manual_seed(0)
    model = randomise_batchnorm(spec.build(spec, num_classes=11))
    x = torch.randn(2, 3, 64, 64)
    check_convergence(relative_errors(model, x, method_for(coding)), coding)


def deeplabv3():
    from snnbench.tasks.zoo.segmentation_models import SegmentationLogits

    torch.manual_seed(0)
    net = torchvision.models.segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, aux_loss=False)
    return randomise_batchnorm(SegmentationLogits(net))


def test_deeplabv3_graph_converts_aspp_pooling_dilated_convs_and_upsampling():
    model = deeplabv3()
    graph = build_network_graph(model, torch.randn(1, 3, 32, 32), "activations")
    kinds = graph.kinds
    # every ReLU call is a neuron site: the stem, 3 per bottleneck (16 of them), the 5 ASPP
    # branches (incl. the global-pooling one), the ASPP projection and the head
    assert graph.placement == "activations" and len(graph.sites) == 1 + 16 * 3 + 5 + 1 + 1
    assert any("classifier.0.convs.4" in s.name for s in graph.sites)  # ASPP global-pooling branch
    interpolations = [n for n in graph.module.graph.nodes if n.target is torch.nn.functional.interpolate]
    assert len(interpolations) == 2 and all(kinds[n.name] == "affine" for n in interpolations)
    assert any(m.dilation != (1, 1) for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert [kinds[n] for n in graph.graded] == ["graded"]  # the stem max-pool only


@pytest.mark.slow
@pytest.mark.parametrize("coding", ["differential", "rate"])
def test_deeplabv3_logits_approach_the_ann(coding):
    err = relative_errors(deeplabv3(), torch.randn(2, 3, 64, 64), method_for(coding))
    # ResNet-50 depth: rate coding measured 1.38 -> 0.88 from T=4 to T=32
    check_convergence(err, coding, rate_ratio=0.75)
