"""Per-sample outcomes (snnbench.common.outcomes): w = 1 gives the task's metric back, and a
weighted resample equals the metric of the duplicated image set (pycocotools for mAP)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest

from snnbench.common.outcomes import (BinaryOutcomes, ConfusionOutcomes, DetectionOutcomes, load_outcomes,
                                      save_outcomes)


def test_binary_accuracy_and_weighted_resample():
    correct = np.array([[1, 0, 1, 1], [1, 1, 1, 0]], bool)
    out = BinaryOutcomes(t=np.array([1, 2]), correct=correct)
    assert out.metric(0)[0] == 0.75 and out.metric(1)[0] == 0.75
    # draw image 1 twice, image 2 twice: accuracy of [0, 0, 1, 1] at t=1
    assert out.metric(0, np.array([[0, 2, 2, 0]]))[0] == 0.5


def _confusion(truth: np.ndarray, pred: np.ndarray, c: int) -> np.ndarray:
    return np.bincount(truth * c + pred, minlength=c * c).reshape(c, c)


def _miou(conf: np.ndarray) -> float:
    diag = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - diag
    return float(np.mean(diag[union > 0] / union[union > 0]))


def test_confusion_miou_equals_the_summed_confusion_matrix():
    rng = np.random.default_rng(0)
    c, n = 4, 6
    per_image = [_confusion(rng.integers(0, c, 50), rng.integers(0, c - 1, 50), c) for _ in range(n)]
    out = ConfusionOutcomes.from_confusions([3], [np.stack(per_image)])
    assert out.metric(0)[0] == pytest.approx(_miou(sum(per_image)))
    draw = np.array([2, 0, 1, 0, 3, 0])
    dup = sum(k * m for k, m in zip(draw, per_image))
    assert out.metric(0, draw[None])[0] == pytest.approx(_miou(dup))


# -- detection: against pycocotools -----------------------------------------------------
def _coco_problem(seed: int, n_images: int = 8, n_cats: int = 3):
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(n_images):
        images.append({"id": i + 1, "width": 100, "height": 100})
        for _ in range(rng.integers(0, 4)):
            x, y, w, h = rng.uniform(0, 60, 2).tolist() + rng.uniform(10, 40, 2).tolist()
            cat = int(rng.integers(1, n_cats + 1))
            anns.append({"image_id": i + 1, "bbox": [x, y, w, h], "category_id": cat, "area": w * h,
                         "iscrowd": int(rng.random() < 0.1), "id": len(anns) + 1})
            if rng.random() < 0.8:  # a detection near the box, sometimes with the wrong class
                jitter = rng.normal(0, 4, 4)
                dets.append([i + 1, x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3], rng.random(),
                             cat if rng.random() < 0.8 else int(rng.integers(1, n_cats + 1))])
        for _ in range(rng.integers(0, 3)):  # false positives
            dets.append([i + 1, *rng.uniform(0, 60, 2), *rng.uniform(5, 30, 2), rng.random(),
                         int(rng.integers(1, n_cats + 1))])
    cats = [{"id": k, "name": str(k)} for k in range(1, n_cats + 1)]
    return {"images": images, "annotations": anns, "categories": cats}, np.array(dets, dtype=np.float64)


def _evaluate(dataset, dets, image_ids):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_detection_map_equals_cocoeval(seed):
    pytest.importorskip("pycocotools")
    dataset, dets = _coco_problem(seed)
    ids = [im["id"] for im in dataset["images"]]
    ev = _evaluate(dataset, dets, ids)
    out = DetectionOutcomes.from_evaluations([4], [ev], ids)
    assert out.metric(0)[0] == pytest.approx(max(0.0, ev.stats[0]), abs=1e-12)
    assert out.ap50(0)[0] == pytest.approx(max(0.0, ev.stats[1]), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 4])
def test_weighted_detection_map_equals_cocoeval_on_the_duplicated_images(seed):
    pytest.importorskip("pycocotools")
    dataset, dets = _coco_problem(seed)
    ids = [im["id"] for im in dataset["images"]]
    out = DetectionOutcomes.from_evaluations([1], [_evaluate(dataset, dets, ids)], ids)
    draws = np.random.default_rng(seed).multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=3)
    got = out.metric(0, draws)
    for row, value in zip(draws, got):
        # the resampled set, built for real: image i copied row[i] times under fresh ids
        images, anns, new_dets, next_id = [], [], [], 1
        for i, copies in zip(ids, row):
            for _ in range(int(copies)):
                images.append({"id": next_id, "width": 100, "height": 100})
                for a in dataset["annotations"]:
                    if a["image_id"] == i:
                        anns.append({**a, "image_id": next_id, "id": len(anns) + 1})
                new_dets += [[next_id, *d[1:]] for d in dets if d[0] == i]
                next_id += 1
        dup = {"images": images, "annotations": anns, "categories": dataset["categories"]}
        ev = _evaluate(dup, np.array(new_dets), [im["id"] for im in images])
        assert value == pytest.approx(max(0.0, ev.stats[0]), abs=1e-12)


def test_detection_without_detections_scores_zero():
    pytest.importorskip("pycocotools")
    dataset, dets = _coco_problem(0)
    ids = [im["id"] for im in dataset["images"]]
    ev = _evaluate(dataset, dets[:1], ids)
    out = DetectionOutcomes.from_evaluations([1], [ev], ids)
    assert out.metric(0)[0] == pytest.approx(max(0.0, ev.stats[0]))


def test_stacked_detection_outcomes_score_each_t_as_its_own_cocoeval():
    pytest.importorskip("pycocotools")
    dataset, dets = _coco_problem(1)
    ids = [im["id"] for im in dataset["images"]]
    evs = [_evaluate(dataset, dets, ids), _evaluate(dataset, dets[: len(dets) // 2], ids)]
    out = DetectionOutcomes.stack([DetectionOutcomes.from_evaluations([t], [ev], ids) for t, ev in zip((2, 8), evs)])
    assert out.t.tolist() == [2, 8]
    for k, ev in enumerate(evs):
        assert out.metric(k)[0] == pytest.approx(max(0.0, ev.stats[0]), abs=1e-12)
    other, _ = _coco_problem(2)
    with pytest.raises(ValueError, match="share images"):
        other_ids = [im["id"] for im in other["images"]]
        DetectionOutcomes.stack([out, DetectionOutcomes.from_evaluations([1], [_evaluate(other, _coco_problem(2)[1],
                                                                                         other_ids)], other_ids)])


def test_save_load_roundtrip_and_errors(tmp_path):
    out = BinaryOutcomes(t=np.array([1, 2]), correct=np.array([[1, 0], [0, 1]], bool))
    path = save_outcomes(tmp_path / "samples" / "abc.npz", out)
    back = load_outcomes(path)
    assert isinstance(back, BinaryOutcomes) and np.array_equal(back.correct, out.correct)
    assert not list((tmp_path / "samples").glob(".*tmp"))
    with pytest.raises(FileNotFoundError, match="no per-sample outcomes"):
        load_outcomes(tmp_path / "samples" / "missing.npz")


def test_a_writer_killed_mid_save_leaves_no_torn_file(tmp_path):
    """SIGKILL while saving a large outcome file: the target is absent or whole, never torn."""
    target = tmp_path / "big.npz"
    code = ("import numpy as np, sys\n"
            "from snnbench.common.outcomes import BinaryOutcomes, save_outcomes\n"
            "rng = np.random.default_rng(0)\n"
            "out = BinaryOutcomes(t=np.arange(1, 65), correct=rng.random((64, 400_000)) < 0.5)\n"
            "print('ready', flush=True)\n"
            f"save_outcomes({str(target)!r}, out)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    if target.exists():
        assert load_outcomes(target).correct.shape == (64, 400_000)
    for leftover in tmp_path.glob(".*.tmp"):
        os.unlink(leftover)


def test_topk_accuracy_keeps_per_sample_hits_that_rescore_top1():
    import torch

    from snnbench.tasks.agreement import AgreementMetric
    from snnbench.tasks.classification import TopKAccuracy

    torch.manual_seed(0)
    metric = TopKAccuracy()
    hits = {1: [], 3: []}
    for _ in range(3):
        targets = torch.randint(0, 10, (7,))
        for t in (1, 3):
            outputs = torch.randn(7, 10)
            metric.update(t, outputs, targets)
            hits[t].append(outputs.argmax(dim=1) == targets)
    outcomes = metric.outcomes()
    assert outcomes.t.tolist() == [1, 3] and outcomes.correct.shape == (2, 21)
    for k, t in enumerate((1, 3)):
        assert outcomes.correct[k].tolist() == torch.cat(hits[t]).tolist()
        assert outcomes.metric(k)[0] == pytest.approx(metric.compute()[t]["top1"])
    agreement = AgreementMetric()
    logits = torch.randn(6, 5)
    agreement.update(2, logits + 0.01 * torch.randn(6, 5), logits)
    assert agreement.outcomes().metric(0)[0] == pytest.approx(agreement.compute()[2]["agree1"])
    assert TopKAccuracy().outcomes() is None


def test_confusion_miou_keeps_per_image_counts_that_rescore_miou():
    import torch

    from snnbench.tasks.miou_metric import ConfusionMIoU

    torch.manual_seed(1)
    metric = ConfusionMIoU(num_classes=4)
    per_image_tp = []
    for _ in range(3):
        target = torch.randint(0, 4, (2, 6, 5))
        target[:, 0, :] = 255  # ignored border
        for t in (1, 2):
            pred = torch.where(torch.rand(2, 6, 5) < 0.3 * t, target.clamp(max=3), torch.randint(0, 4, (2, 6, 5)))
            metric.update(t, pred, target)
            if t == 1:
                per_image_tp += [int(((pred[b] == target[b]) & (target[b] != 255) & (target[b] == 2)).sum())
                                 for b in range(2)]
    outcomes = metric.outcomes()
    assert outcomes.t.tolist() == [1, 2] and outcomes.true_positive.shape == (2, 6, 4)
    assert outcomes.true_positive[0, :, 2].tolist() == per_image_tp
    for k, t in enumerate((1, 2)):
        assert outcomes.metric(k)[0] == pytest.approx(metric.compute()[t]["miou"], abs=1e-12)
        conf = metric.confusion(t).numpy()
        assert outcomes.labelled[k].sum(axis=0).tolist() == conf.sum(axis=1).tolist()
        assert outcomes.predicted[k].sum(axis=0).tolist() == conf.sum(axis=0).tolist()
