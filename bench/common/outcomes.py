"""Per-sample outcomes of one cell, enough to resample its metric over images.

A task's metric keeps, for every scored time-step t, what each evaluation sample
contributed; the harness saves it (``<results>/samples/<cell_key>.npz``) and recomputes the
metric on bootstrap resamples of the images (:mod:`snnbench.significance`). Every kind
recomputes the metric from ``[B, n]`` image multiplicities ``w`` (row b: how often each of
the n images was drawn), so ``w = 1`` gives back the metric the task reported:

* :class:`BinaryOutcomes` (classification): ``correct[k, i]``; accuracy ``w·correct / n``.
* :class:`ConfusionOutcomes` (segmentation): per image and class the true-positive,
  predicted and labelled pixel counts; ``IoU_c = TP_c / (P_c + G_c - TP_c)`` on the
  weighted sums, mIoU the mean over classes with a non-empty union (the convention of
  the segmentation task's confusion-matrix metric).
* :class:`DetectionOutcomes` (detection): the per-image matches that pycocotools'
  ``COCOeval.evaluateImg`` computes (area range "all", 100 detections per image); AP is
  re-accumulated as ``COCOeval.accumulate`` does (detections sorted by score with a
  stable sort, cumulative TP/FP, precision made monotone, read at 101 recall thresholds),
  with each detection and ground-truth box counted as often as its image is drawn.
  mAP@[.5:.95] averages the IoU thresholds and the categories with ground truth; AP50 is
  the first IoU threshold. Duplicating an image and weighting it by 2 give the same AP.

This module imports only NumPy, so tasks may build outcomes without importing the harness.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

#: the recall thresholds of COCO AP (``COCOeval.Params.recThrs``)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
_EPS = np.spacing(1)
#: the most float64 elements one resampling block of AP holds (about 160 MB)
_CHUNK_ELEMENTS = 2e7


def _as_weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    if weights is None:
        return np.ones((1, n))
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = w[None, :]
    if w.shape[1] != n:
        raise ValueError(f"weights cover {w.shape[1]} samples, the outcomes {n}")
    return w


@dataclass(frozen=True)
class BinaryOutcomes:
    """Whether each sample was scored correct at each scored t (top-1 accuracy)."""

    t: np.ndarray  # [K] int
    correct: np.ndarray  # [K, n] bool
    kind: str = field(default="binary", init=False)

    @property
    def n(self) -> int:
        return int(self.correct.shape[1])

    def metric(self, k: int, weights: np.ndarray | None = None) -> np.ndarray:
        """Accuracy at the k-th scored t for each row of ``weights`` ``[B, n]`` -> ``[B]``."""
        w = _as_weights(weights, self.n)
        return w @ self.correct[k].astype(np.float64) / w.sum(axis=1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"t": self.t, "correct": self.correct}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "BinaryOutcomes":
        return cls(t=np.asarray(arrays["t"], dtype=np.int64), correct=np.asarray(arrays["correct"], dtype=bool))


@dataclass(frozen=True)
class ConfusionOutcomes:
    """Per image and class: true-positive, predicted and labelled pixel counts ``[K, n, C]``."""

    t: np.ndarray
    true_positive: np.ndarray
    predicted: np.ndarray
    labelled: np.ndarray
    kind: str = field(default="confusion", init=False)

    @property
    def n(self) -> int:
        return int(self.true_positive.shape[1])

    def metric(self, k: int, weights: np.ndarray | None = None) -> np.ndarray:
        """mIoU at the k-th scored t for each row of ``weights`` -> ``[B]``."""
        w = _as_weights(weights, self.n)
        tp = w @ self.true_positive[k].astype(np.float64)
        union = w @ self.predicted[k].astype(np.float64) + w @ self.labelled[k].astype(np.float64) - tp
        present = union > 0
        iou = np.where(present, tp / np.where(present, union, 1.0), 0.0)
        count = present.sum(axis=1)
        return np.where(count > 0, iou.sum(axis=1) / np.maximum(count, 1), np.nan)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"t": self.t, "true_positive": self.true_positive, "predicted": self.predicted,
                "labelled": self.labelled}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "ConfusionOutcomes":
        return cls(t=np.asarray(arrays["t"], dtype=np.int64), true_positive=np.asarray(arrays["true_positive"]),
                   predicted=np.asarray(arrays["predicted"]), labelled=np.asarray(arrays["labelled"]))

    @classmethod
    def from_confusions(cls, t: Sequence[int], confusions: Sequence[np.ndarray]) -> "ConfusionOutcomes":
        """From per-image ``[K][n, C, C]`` confusion matrices (rows truth, columns prediction)."""
        conf = np.stack([np.asarray(c, dtype=np.int64) for c in confusions])  # [K, n, C, C]
        return cls(t=np.asarray(list(t), dtype=np.int64), true_positive=np.diagonal(conf, axis1=2, axis2=3).copy(),
                   predicted=conf.sum(axis=2), labelled=conf.sum(axis=3))


@dataclass(frozen=True)
class DetectionOutcomes:
    """COCO per-image matches at each scored t.

    Detections of every t are stacked; ``det_step[j]`` says which t (index into ``t``).
    Within a (t, category) the detections are in ``COCOeval.accumulate``'s concatenation
    order (images in order, each image's detections by descending score), so the stable
    sort by score reproduces pycocotools' ties exactly.
    """

    t: np.ndarray  # [K]
    iou_thresholds: np.ndarray  # [I]
    ground_truth: np.ndarray  # [n, C] int: non-ignored ground-truth boxes per image and category
    det_step: np.ndarray  # [N] int
    det_image: np.ndarray  # [N] int (index into the n images)
    det_category: np.ndarray  # [N] int (index into the C categories)
    det_score: np.ndarray  # [N] float
    det_matched: np.ndarray  # [N, I] bool
    det_ignored: np.ndarray  # [N, I] bool
    kind: str = field(default="detection", init=False)

    @property
    def n(self) -> int:
        return int(self.ground_truth.shape[0])

    def precision(self, k: int, weights: np.ndarray | None = None) -> np.ndarray:
        """Interpolated precision ``[B, I, C, R]`` at the k-th scored t; NaN for a category
        without (weighted) ground truth."""
        w = _as_weights(weights, self.n)
        n_iou, n_cat, n_rec = len(self.iou_thresholds), self.ground_truth.shape[1], len(RECALL_THRESHOLDS)
        out = np.full((w.shape[0], n_iou, n_cat, n_rec), np.nan)
        gt = w @ self.ground_truth.astype(np.float64)  # [B, C]
        at_step = self.det_step == k
        for c in range(n_cat):
            rows = np.flatnonzero(at_step & (self.det_category == c))
            order = rows[np.argsort(-self.det_score[rows], kind="mergesort")]
            has_gt = gt[:, c] > 0
            if not has_gt.any():
                continue
            out[has_gt, :, c, :] = 0.0
            if not len(order):
                continue
            tp_count, fp_count = _segment_counts(self.det_image[order], self.det_matched[order],
                                                 self.det_ignored[order], self.n)
            if tp_count is None:  # no true positive at any IoU: precision 0 wherever there is ground truth
                continue
            n_seg = tp_count.shape[1]
            rows_b = np.flatnonzero(has_gt)
            chunk = max(1, int(_CHUNK_ELEMENTS // max(1, n_iou * n_seg)))
            for start in range(0, len(rows_b), chunk):
                b = rows_b[start:start + chunk]
                # weighted TP/FP per segment (exact: integer counts, integer weights), then cumulated
                tp_sum = np.cumsum((w[b] @ tp_count.reshape(self.n, -1)).reshape(len(b), n_seg, n_iou), axis=1)
                fp_sum = np.cumsum((w[b] @ fp_count.reshape(self.n, -1)).reshape(len(b), n_seg, n_iou), axis=1)
                out[b, :, c, :] = _interpolated_precision(tp_sum.transpose(0, 2, 1), fp_sum.transpose(0, 2, 1),
                                                          gt[b, c][:, None, None])
        return out

    def metric(self, k: int, weights: np.ndarray | None = None) -> np.ndarray:
        """mAP@[.5:.95] at the k-th scored t for each row of ``weights`` -> ``[B]``."""
        return _mean_valid(self.precision(k, weights))

    def ap50(self, k: int, weights: np.ndarray | None = None) -> np.ndarray:
        return _mean_valid(self.precision(k, weights)[:, :1])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ("t", "iou_thresholds", "ground_truth", "det_step",
                                                        "det_image", "det_category", "det_score", "det_matched",
                                                        "det_ignored")}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "DetectionOutcomes":
        return cls(t=np.asarray(arrays["t"], dtype=np.int64), iou_thresholds=np.asarray(arrays["iou_thresholds"]),
                   ground_truth=np.asarray(arrays["ground_truth"]), det_step=np.asarray(arrays["det_step"]),
                   det_image=np.asarray(arrays["det_image"]), det_category=np.asarray(arrays["det_category"]),
                   det_score=np.asarray(arrays["det_score"]), det_matched=np.asarray(arrays["det_matched"], bool),
                   det_ignored=np.asarray(arrays["det_ignored"], bool))

    @classmethod
    def from_evaluations(cls, t: Sequence[int], evaluations: Sequence[Any], image_ids: Sequence[int]
                         ) -> "DetectionOutcomes":
        """From one evaluated pycocotools ``COCOeval`` per scored t (``evaluate()`` run, with
        ``params.imgIds == image_ids``), reading area range "all" at the largest maxDets."""
        first = evaluations[0].params
        cat_ids = list(first.catIds)
        n_img, n_cat = len(image_ids), len(cat_ids)
        ground_truth = np.zeros((n_img, n_cat), dtype=np.int64)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("step", "image", "category", "score", "matched",
                                                                "ignored")}
        for k, evaluator in enumerate(evaluations):
            p = evaluator.params
            if list(p.imgIds) != list(image_ids) or list(p.catIds) != cat_ids:
                raise ValueError("every COCOeval must cover the same images and categories")
            max_det = p.maxDets[-1]
            n_area = len(p.areaRng)
            for c in range(n_cat):
                for i in range(n_img):
                    e = evaluator.evalImgs[c * n_area * n_img + i]  # area range index 0: "all"
                    if e is None:
                        continue
                    if k == 0:
                        ground_truth[i, c] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
                    scores = np.asarray(e["dtScores"][:max_det], dtype=np.float64)
                    if not len(scores):
                        continue
                    d = len(scores)
                    parts["step"].append(np.full(d, k))
                    parts["image"].append(np.full(d, i))
                    parts["category"].append(np.full(d, c))
                    parts["score"].append(scores)
                    parts["matched"].append(np.asarray(e["dtMatches"])[:, :max_det].T > 0)
                    parts["ignored"].append(np.asarray(e["dtIgnore"])[:, :max_det].T.astype(bool))
        n_iou = len(first.iouThrs)

        def cat(name: str, dtype: Any, width: int | None = None) -> np.ndarray:
            if parts[name]:
                return np.concatenate(parts[name]).astype(dtype)
            return np.zeros((0,) if width is None else (0, width), dtype=dtype)

        return cls(t=np.asarray(list(t), dtype=np.int64), iou_thresholds=np.asarray(first.iouThrs, dtype=np.float64),
                   ground_truth=ground_truth, det_step=cat("step", np.int64), det_image=cat("image", np.int64),
                   det_category=cat("category", np.int64), det_score=cat("score", np.float64),
                   det_matched=cat("matched", bool, n_iou), det_ignored=cat("ignored", bool, n_iou))

    def without_detections(self, t: int) -> "DetectionOutcomes":
        """The same images and ground truth scored at ``t`` with no detection (AP 0)."""
        n_iou = len(self.iou_thresholds)
        return DetectionOutcomes(t=np.asarray([t], dtype=np.int64), iou_thresholds=self.iou_thresholds,
                                 ground_truth=self.ground_truth, det_step=np.zeros(0, np.int64),
                                 det_image=np.zeros(0, np.int64), det_category=np.zeros(0, np.int64),
                                 det_score=np.zeros(0), det_matched=np.zeros((0, n_iou), bool),
                                 det_ignored=np.zeros((0, n_iou), bool))

    @classmethod
    def stack(cls, parts: Sequence["DetectionOutcomes"]) -> "DetectionOutcomes":
        """Join outcomes of the same images scored at different t (one part per group of t),
        so a metric can turn each COCOeval into arrays as soon as it has run."""
        if not parts:
            raise ValueError("no detection outcomes to stack")
        first = parts[0]
        for part in parts[1:]:
            if not (np.array_equal(part.ground_truth, first.ground_truth)
                    and np.array_equal(part.iou_thresholds, first.iou_thresholds)):
                raise ValueError("stacked detection outcomes must share images, categories and IoU thresholds")
        offsets = np.cumsum([0] + [len(p.t) for p in parts[:-1]])
        return cls(t=np.concatenate([p.t for p in parts]), iou_thresholds=first.iou_thresholds,
                   ground_truth=first.ground_truth,
                   det_step=np.concatenate([p.det_step + o for p, o in zip(parts, offsets)]),
                   **{name: np.concatenate([getattr(p, name) for p in parts])
                      for name in ("det_image", "det_category", "det_score", "det_matched", "det_ignored")})


Outcomes = BinaryOutcomes | ConfusionOutcomes | DetectionOutcomes
KINDS: dict[str, type] = {"binary": BinaryOutcomes, "confusion": ConfusionOutcomes, "detection": DetectionOutcomes}


def _segment_counts(images: np.ndarray, matched: np.ndarray, ignored: np.ndarray, n: int
                    ) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """Per image, the TP and FP detections of each segment ``[n, S, I]`` of one category's
    score-sorted detections, a segment ending at each detection that is a TP at some IoU.

    Exact reduction of ``COCOeval.accumulate``: a recall threshold is first reached at a TP,
    and a detection that is a TP at no IoU (an FP or ignored at each) has a precision no
    higher than the detection before it, so it never sets the precision envelope there; it
    only adds its FP to the next segment end (or, after the last TP, to nothing that is read).
    Cumulating the segment sums gives the TP/FP counts at every segment end, for any image
    weights, without a pass over every detection per resample."""
    keep = ~ignored
    tp = keep & matched   # [D, I]
    fp = keep & ~matched
    ends = np.flatnonzero(tp.any(axis=1))
    if not len(ends):
        return None, None
    segment = np.searchsorted(ends, np.arange(len(images)), side="left")  # the segment end at or after each
    inside = segment < len(ends)
    tp_count = np.zeros((n, len(ends), tp.shape[1]))
    fp_count = np.zeros_like(tp_count)
    np.add.at(tp_count, (images[inside], segment[inside]), tp[inside])
    np.add.at(fp_count, (images[inside], segment[inside]), fp[inside])
    return tp_count, fp_count


def _interpolated_precision(tp_sum: np.ndarray, fp_sum: np.ndarray, n_gt: np.ndarray) -> np.ndarray:
    """``[..., R]`` precision at the recall thresholds from cumulative TP/FP ``[..., D]``
    (``COCOeval.accumulate``: the first detection whose recall reaches each threshold, read
    off the precision envelope; 0 beyond the last detection)."""
    recall = tp_sum / n_gt
    precision = tp_sum / (fp_sum + tp_sum + _EPS)
    envelope = np.flip(np.maximum.accumulate(np.flip(precision, -1), axis=-1), -1)
    lead, n_det = recall.shape[:-1], recall.shape[-1]
    rows = int(np.prod(lead))
    # exact, vectorised searchsorted(recall_row, thresholds, "left") for every row: g counts
    # the thresholds at or below each recall value; as recall is non-decreasing along a row,
    # the first detection reaching threshold j is the number of detections with g <= j
    flat = recall.reshape(rows, n_det)
    reached = np.searchsorted(RECALL_THRESHOLDS, flat, side="right")  # [rows, D] in 0..R
    n_rec = len(RECALL_THRESHOLDS)
    counts = np.bincount((reached + (n_rec + 1) * np.arange(rows)[:, None]).ravel(),
                         minlength=rows * (n_rec + 1)).reshape(rows, n_rec + 1)
    index = np.cumsum(counts, axis=1)[:, :n_rec]
    inside = index < n_det
    picked = np.take_along_axis(envelope.reshape(rows, n_det), np.minimum(index, n_det - 1), axis=1)
    return np.where(inside, picked, 0.0).reshape(*lead, len(RECALL_THRESHOLDS))


def _mean_valid(precision: np.ndarray) -> np.ndarray:
    flat = precision.reshape(precision.shape[0], -1)
    valid = ~np.isnan(flat)
    count = valid.sum(axis=1)
    return np.where(count > 0, np.where(valid, flat, 0.0).sum(axis=1) / np.maximum(count, 1), 0.0)


#: the folder of a results directory that holds one ``<cell_key>.npz`` per cell
SAMPLES_DIR = "samples"


def samples_file(samples_dir: str | os.PathLike, cell_key: str) -> Path:
    """A cell's samples file in a samples folder: ``<samples_dir>/<cell_key>.npz``."""
    return Path(samples_dir) / f"{cell_key}.npz"


def samples_path(results_dir: str | os.PathLike, cell_key: str) -> Path:
    """Where a cell's per-sample outcomes live: ``<results>/samples/<cell_key>.npz``."""
    return samples_file(Path(results_dir) / SAMPLES_DIR, cell_key)


def save_outcomes(path: str | os.PathLike, outcomes: Outcomes) -> Path:
    """Write ``outcomes`` to ``path`` (.npz) atomically: a torn file is never left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, kind=np.asarray(outcomes.kind), **outcomes.to_arrays())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_outcomes(path: str | os.PathLike) -> Outcomes:
    """Read a samples file written by :func:`save_outcomes`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no per-sample outcomes at {path} (written by runs with a results directory)")
    with np.load(path, allow_pickle=False) as data:
        kind = str(data["kind"])
        if kind not in KINDS:
            raise ValueError(f"{path}: unknown outcome kind {kind!r}; expected one of {sorted(KINDS)}")
        return KINDS[kind].from_arrays({k: data[k] for k in data.files if k != "kind"})


__all__ = ["BinaryOutcomes", "ConfusionOutcomes", "DetectionOutcomes", "KINDS", "Outcomes", "RECALL_THRESHOLDS",
           "SAMPLES_DIR", "load_outcomes", "samples_file", "samples_path",
           "save_outcomes"]
