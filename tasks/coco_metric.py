"""COCO bbox mAP@[.5:.95] and AP50 at every time-step, from pycocotools' COCOeval.

The detection tasks' :class:`~snnbench.tasks.base.StepMetric`: one simulation to T yields
the detections of every t; COCOeval runs once per scored t over exactly the images that
were evaluated (the official DCGS evaluation, docs/dcgs-official-code.md §5.4, without its
11-image debug limit).
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from snnbench.common.outcomes import DetectionOutcomes
from snnbench.tasks.base import StepMetric


class COCOMetric(StepMetric):
    """COCO bbox mAP@[.5:.95] and AP50 at every time-step (pycocotools COCOeval).

    ``update(t, detections, targets)`` takes one detection dict per image (``boxes``
    ``[N, 4]`` xyxy in original image coordinates, ``scores``, ``labels``) and the image
    ids (ints, or dicts with ``image_id``). Detections are kept as compact float64 rows
    ``[image_id, x, y, w, h, score, category]``; :meth:`compute` runs COCOeval once per t
    over exactly the images that were updated. A t without any detection scores 0.0.

    Args:
        ground_truth: a pycocotools ``COCO`` of the annotations.
        label_to_category: model label -> COCO category id (identity when None: the
            torchvision convention for COCO, and the canvases' category ids).
    """

    name = "map"

    def __init__(self, ground_truth: Any, label_to_category: Mapping[int, int] | None = None) -> None:
        self.ground_truth = ground_truth
        self.label_to_category = dict(label_to_category) if label_to_category is not None else None
        self._rows: dict[int, list[np.ndarray]] = defaultdict(list)
        self._images: dict[int, set[int]] = defaultdict(set)
        self._outcomes: dict[int, DetectionOutcomes | None] = {}

    @staticmethod
    def _image_ids(targets: Any) -> list[int]:
        if isinstance(targets, torch.Tensor):
            return [int(v) for v in targets.reshape(-1).tolist()]
        return [int(t["image_id"]) if isinstance(t, Mapping) else int(t) for t in targets]

    def update(self, t: int, outputs: Sequence[Mapping[str, torch.Tensor]], targets: Any) -> None:
        ids = self._image_ids(targets)
        if len(outputs) != len(ids):
            raise ValueError(f"{len(outputs)} detection dicts for {len(ids)} image ids")
        for det, image_id in zip(outputs, ids):
            self._images[t].add(image_id)
            boxes = det["boxes"].detach().to("cpu", torch.float64).reshape(-1, 4)
            if not len(boxes):
                continue
            labels = det["labels"].detach().to("cpu").reshape(-1).tolist()
            if self.label_to_category is not None:
                labels = [self.label_to_category.get(int(v), -1) for v in labels]
            rows = np.empty((len(boxes), 7), dtype=np.float64)
            rows[:, 0] = image_id
            rows[:, 1:3] = boxes[:, :2].numpy()
            rows[:, 3:5] = (boxes[:, 2:] - boxes[:, :2]).numpy()
            rows[:, 5] = det["scores"].detach().to("cpu", torch.float64).reshape(-1).numpy()
            rows[:, 6] = labels
            self._rows[t].append(rows)

    def compute(self) -> dict[int, dict[str, float]]:
        return {t: self._evaluate(t) for t in sorted(self._images)}

    def outcomes(self) -> DetectionOutcomes | None:
        """The per-image COCO matches of every t :meth:`compute` scored, from which mAP is
        re-accumulated on image resamples; a t without detections has no rows (AP 0).
        None before :meth:`compute`, when no t had a detection, or when the t saw
        different images."""
        ts = sorted(self._outcomes)
        scored = [self._outcomes[t] for t in ts if self._outcomes[t] is not None]
        if not scored or len({tuple(sorted(self._images[t])) for t in ts}) != 1:
            return None
        template = scored[0]
        parts = [self._outcomes[t] or template.without_detections(t) for t in ts]
        return DetectionOutcomes.stack(parts)

    def _evaluate(self, t: int) -> dict[str, float]:
        from pycocotools.cocoeval import COCOeval

        gt = self.ground_truth
        image_ids = sorted(self._images[t])
        unknown = set(image_ids) - set(gt.getImgIds())
        if unknown:
            raise ValueError(f"detections for image ids {sorted(unknown)[:5]} that the annotations do not list")
        if not gt.getAnnIds(imgIds=image_ids):
            raise ValueError(f"the {len(image_ids)} evaluated images have no ground-truth boxes; "
                             "mAP is undefined")
        rows = self._rows.get(t)
        if not rows:
            self._outcomes[t] = None
            return {"map": 0.0, "ap50": 0.0}
        with contextlib.redirect_stdout(io.StringIO()):
            detections = gt.loadRes(np.concatenate(rows))
            evaluator = COCOeval(gt, detections, "bbox")
            evaluator.params.imgIds = image_ids
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        # the per-image matches, kept as arrays (the evaluator itself is dropped)
        self._outcomes[t] = DetectionOutcomes.from_evaluations([t], [evaluator], image_ids)
        return {"map": max(0.0, float(evaluator.stats[0])), "ap50": max(0.0, float(evaluator.stats[1]))}


__all__ = ["COCOMetric"]
