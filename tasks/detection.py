"""Object detection tasks: COCO (real val2017 or any COCO-layout root) and the embedded
Fashion-MNIST canvases, with COCO bbox mAP from pycocotools at every time-step.

The convertible core of a torchvision single-stage detector (FCOS, RetinaNet) is its
backbone (+FPN) and head: ``images -> {"cls_logits", "bbox_regression", ...}``; the whole
of it is converted (docs/dcgs-official-code.md §4.3). Around it, the bundle's

* ``prepare`` applies the detector's own ``GeneralizedRCNNTransform`` (resize, normalise,
  pad the batch to a multiple of 32), as the official code does
  (docs/dcgs-official-code.md §5.4);
* ``finish`` takes the head outputs *decoded at time-step t* (the engine averages them
  before post-processing, docs/dcgs-official-code.md §2.9), splits them per FPN level,
  builds the anchors (cached per padded input shape) and runs the detector's
  ``postprocess_detections`` (score > 0.05, NMS, 100 per image) and
  ``transform.postprocess`` (boxes back in original image coordinates).

The metric is :class:`~snnbench.tasks.coco_metric.COCOMetric`: the detections of every t
in COCO result format, COCOeval once per scored t (by default t = 1, 2, 4, ..., T;
``--eval-ts all`` scores every t).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from snnbench.common.hashing import sha256_text
from snnbench.tasks.base import DataNotFoundError, ModelBundle, Task
from snnbench.tasks.coco_metric import COCOMetric
from snnbench.tasks.classification import EVAL_SUBSET_SEED, check_model_fits
from snnbench.tasks.data import coco
from snnbench.tasks.data.arrays import subset_indices
from snnbench.tasks.zoo import ModelSpec, get_model_spec, list_models
from snnbench.tasks.zoo.weights import load_into, load_state_dict_file, torchvision_weights_path

log = logging.getLogger(__name__)


# -- the bundle --------------------------------------------------------------------------
class DetectorCore(nn.Module):
    """Backbone (+FPN) and head of a torchvision single-stage detector: the part converted.

    ``forward(images [B, 3, H, W]) -> {"cls_logits": [B, HWA, K], "bbox_regression":
    [B, HWA, 4], ("bbox_ctrness": [B, HWA, 1])}``, levels concatenated along dim 1.
    The modules are the detector's own (shared, not copied).
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.backbone = detector.backbone
        self.head = detector.head

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = list(self.backbone(images).values())
        return self.head(features)


@dataclass
class DetectionMeta:
    """What ``finish`` needs from ``prepare``: sizes after resize (unpadded) and before."""

    image_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    padded_size: tuple[int, int]


class DetectorIO:
    """``prepare``/``finish`` around a :class:`DetectorCore` (the detector's own transform,
    anchors and post-processing)."""

    def __init__(self, detector: nn.Module) -> None:
        self.detector = detector
        self._anchors: dict[tuple, tuple[torch.Tensor, list[int]]] = {}

    def prepare(self, images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, DetectionMeta]:
        """Images ``[3, H, W]`` in [0, 1] -> the padded, normalised batch and its meta."""
        if isinstance(images, torch.Tensor) and images.ndim == 3:
            images = [images]
        images = list(images)
        device = _device_of(self.detector)
        originals = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        self.detector.transform.eval()
        with torch.no_grad():
            batch, _ = self.detector.transform([img.to(device) for img in images])
        padded = (int(batch.tensors.shape[-2]), int(batch.tensors.shape[-1]))
        return batch.tensors, DetectionMeta([tuple(s) for s in batch.image_sizes], originals, padded)

    def anchors(self, padded: tuple[int, int], device: torch.device, dtype: torch.dtype
                ) -> tuple[torch.Tensor, list[int]]:
        """Anchors of one image of padded size ``padded`` and locations per level (cached).

        A miss runs the ANN backbone once on a zero image of that size for the feature shapes.
        """
        key = (padded, str(device), dtype)
        if key not in self._anchors:
            from torchvision.models.detection.image_list import ImageList

            with torch.no_grad():
                probe = torch.zeros((1, 3) + padded, device=_device_of(self.detector), dtype=dtype)
                features = list(self.detector.backbone(probe).values())
                anchors = self.detector.anchor_generator(ImageList(probe, [padded]), features)[0]
            self._anchors[key] = (anchors.to(device), [int(f.shape[-2] * f.shape[-1]) for f in features])
        return self._anchors[key]

    def finish(self, head_outputs: Mapping[str, torch.Tensor], meta: DetectionMeta) -> list[dict[str, torch.Tensor]]:
        """Decoded head outputs -> one ``{"boxes", "scores", "labels"}`` per image (original coordinates)."""
        logits = head_outputs["cls_logits"]
        anchors, per_level = self.anchors(meta.padded_size, logits.device, logits.dtype)
        per_anchor = logits.shape[1] // sum(per_level)  # anchors per location (RetinaNet: 9)
        sizes = [n * per_anchor for n in per_level]
        split = {k: list(v.split(sizes, dim=1)) for k, v in head_outputs.items()}
        split_anchors = [list(anchors.split(sizes))] * logits.shape[0]
        with torch.no_grad():
            detections = self.detector.postprocess_detections(split, split_anchors, meta.image_sizes)
            return self.detector.transform.postprocess(detections, meta.image_sizes, meta.original_sizes)


def _device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def detection_bundle(detector: nn.Module, info: dict[str, Any], device: str | torch.device = "cpu") -> ModelBundle:
    """A :class:`ModelBundle` around a torchvision FCOS/RetinaNet (moved to ``device``, eval mode)."""
    detector = detector.to(device).eval()
    io_ = DetectorIO(detector)
    return ModelBundle(core=DetectorCore(detector).eval(), prepare=io_.prepare, finish=io_.finish,
                       info=dict(info, detector=detector))


@torch.inference_mode()
def evaluate_bundle(bundle: ModelBundle, batches: Iterator[tuple[Any, Any]], metric: COCOMetric
                    ) -> dict[str, float]:
    """The ANN's COCO metrics over ``batches`` (core + post-processing, t = 1)."""
    for images, ids in batches:
        x, meta = bundle.prepare(images)
        metric.update(1, bundle.finish(bundle.core(x), meta), ids)
    return metric.compute()[1]


# -- tasks -----------------------------------------------------------------------------
class DetectionTask(Task):
    """A task over a COCO-layout root, read by :mod:`snnbench.tasks.data.coco`."""

    kind = "detection"
    metric = "map"
    default_batch_size = 2
    #: COCOeval (and NMS post-processing) at t = 1, 2, 4, ..., T only unless a cell asks
    #: for more (``--eval-ts all``): scoring every t cost ~20 % of a detection simulation
    default_eval_ts = "pow2"

    def __init__(self, data_root: str | None = None, zoo_dir: str | None = None, num_workers: int = 0) -> None:
        super().__init__(data_root)
        self.zoo_dir = zoo_dir
        self.num_workers = num_workers
        self._data: coco.CocoData | None = None
        self._ground_truth: Any = None

    def coco_root(self) -> Path:
        """The COCO-layout directory the task reads."""
        raise NotImplementedError

    def data(self) -> coco.CocoData:
        if self._data is None:
            self._data = coco.load_coco(self.coco_root())
        return self._data

    def ground_truth(self) -> Any:
        """The validation annotations as a pycocotools ``COCO`` (built once)."""
        if self._ground_truth is None:
            self._ground_truth = self.data().ground_truth()
        return self._ground_truth

    def check_data(self) -> None:
        self.data()

    def models(self) -> list[str]:
        return list_models(task=self.name)

    def eval_set_size(self) -> int:
        return len(self.data().evaluation.images)

    def splits(self) -> dict[str, str]:
        data = self.data()
        return {"calibration": data.calibration_split, "evaluation": data.evaluation.name}

    def num_classes(self) -> int:
        """Outputs of a detector trained on this data: largest category id + 1 (torchvision convention)."""
        return max(int(c["id"]) for c in self.data().categories) + 1

    def check_categories(self, spec: ModelSpec, num_classes: int) -> None:
        largest = max(int(c["id"]) for c in self.data().categories)
        if largest >= num_classes:
            raise DataNotFoundError(
                f"{spec.name} predicts labels 0..{num_classes - 1} (= COCO category ids) but "
                f"{self.data().evaluation.annotation_file} has category ids up to {largest}; use a model trained on "
                "these categories (--weights FILE)")

    def new_metric(self) -> COCOMetric:
        return COCOMetric(self.ground_truth())

    def calib_batches(self, size: int, batch_size: int, seed: int, bundle: ModelBundle) -> Iterator[torch.Tensor]:
        pool = self.data().calibration.images
        chosen = [pool[i] for i in subset_indices(len(pool), size, seed)]
        for images, _ in coco.image_batches(chosen, batch_size, self.num_workers):
            yield bundle.prepare(images)[0]

    def eval_batches(self, size: int | None, batch_size: int, bundle: ModelBundle) -> Iterator[tuple[Any, Any]]:
        pool = self.data().evaluation.images
        chosen = [pool[i] for i in subset_indices(len(pool), size, EVAL_SUBSET_SEED)]
        yield from coco.image_batches(chosen, batch_size, self.num_workers)

    def evaluate(self, bundle: ModelBundle, size: int | None = None, batch_size: int | None = None
                 ) -> dict[str, float]:
        """The ANN's mAP/AP50 on the evaluation images (all by default)."""
        batches = self.eval_batches(size, batch_size or self.default_batch_size, bundle)
        return evaluate_bundle(bundle, batches, self.new_metric())


class COCOTask(DetectionTask):
    """COCO instances json + images under --data-root (e.g. val2017), bbox mAP per time-step."""

    name = "coco"
    description = ("COCO detection (annotations/instances_val2017.json + val2017/ under --data-root), "
                   "bbox mAP@[.5:.95] and AP50 via pycocotools")
    default_batch_size = 2

    def coco_root(self) -> Path:
        if not self.data_root:
            raise DataNotFoundError(f"the coco task needs --data-root DIR: {coco.LAYOUT_HELP}")
        return Path(self.data_root).expanduser()

    def default_model(self) -> str:
        return "fcos_resnet50_fpn"

    def build(self, model: str, weights: str | None = None, device: str | torch.device = "cpu",
              progress: bool = True) -> ModelBundle:
        spec = get_model_spec(model)
        check_model_fits(self, spec)
        num_classes = int(spec.meta.get("num_classes", self.num_classes()))
        self.check_categories(spec, num_classes)
        detector = spec.build(spec, num_classes=num_classes)
        path = weights or str(torchvision_weights_path(spec.weights))
        load_into(detector, load_state_dict_file(path), origin=path)
        info = {"model": model, "weights": os.path.abspath(path), "num_classes": num_classes}
        return detection_bundle(detector, info, device)


#: the embedded canvas dataset: 4,000 training canvases (Fashion-MNIST train split) and 500
#: validation canvases (test split); fixed seeds in :class:`CanvasDataset`
FMNIST_DET_TRAIN_CANVASES = 4000
FMNIST_DET_VAL_CANVASES = 500


class FashionMNISTDetectionTask(DetectionTask):
    """Real Fashion-MNIST objects on 128x128 canvases, exact boxes in a COCO json (embedded default).

    ``--data-root`` is where the Fashion-MNIST IDX files are (as for ``fashion_mnist``); the
    canvases are generated once into ``$SNNBENCH_DATA_DIR/fmnist_det`` (default
    ``~/.cache/snnbench/data/fmnist_det``) and then read like any COCO root.
    """

    name = "fmnist_det"
    description = ("Fashion-MNIST canvases (128x128, 1-4 real objects; 4,000 train / 500 val from the test "
                   "split), bbox mAP via pycocotools; generated locally")
    default_batch_size = 25

    def __init__(self, data_root: str | None = None, zoo_dir: str | None = None, num_workers: int = 0,
                 canvas_dir: str | os.PathLike | None = None, train_count: int | None = None,
                 val_count: int | None = None) -> None:
        super().__init__(data_root, zoo_dir, num_workers)
        from snnbench.tasks.data.canvases import CanvasDataset, default_data_dir

        self.canvases = CanvasDataset("coco", train_count or FMNIST_DET_TRAIN_CANVASES,
                                      val_count or FMNIST_DET_VAL_CANVASES)
        self.canvas_dir = Path(canvas_dir) if canvas_dir else default_data_dir(self.name)

    def coco_root(self) -> Path:
        from snnbench.tasks.data.canvases import ensure_canvases

        return ensure_canvases(self.canvas_dir, self.canvases, fmnist_root=self.data_root)

    def data_tag(self) -> str:
        """Short hash of the canvas manifest (counts, seeds, geometry, generator version)."""
        text = json.dumps(self.canvases.manifest(), sort_keys=True)
        return "canvas-" + sha256_text(text, 8)

    def default_model(self) -> str:
        return "fcos_mobilenet_v2"

    def train_data(self):
        """The training canvases (uint8 images and boxes; labels = category ids)."""
        from snnbench.tasks.zoo.detection_training import DetectionTrainData

        split = self.data().calibration
        boxes = split.boxes()
        images, targets = [], []
        for item in split.images:
            images.append(coco.read_image_uint8(item.path))
            b, labels = boxes[item.id]
            targets.append({"boxes": torch.from_numpy(b), "labels": torch.from_numpy(labels)})
        return DetectionTrainData(images, targets)

    def build(self, model: str, weights: str | None = None, device: str | torch.device = "cpu",
              progress: bool = True, retrain: bool = False) -> ModelBundle:
        spec = get_model_spec(model)
        check_model_fits(self, spec)
        num_classes = self.num_classes()
        detector = spec.build(spec, num_classes=num_classes)
        info: dict[str, Any] = {"model": model, "num_classes": num_classes, "data": self.data_tag()}
        if weights:
            load_into(detector, load_state_dict_file(weights), origin=weights)
            info["weights"] = os.path.abspath(weights)
        elif spec.source == "zoo":
            from snnbench.tasks.zoo.detection_training import load_or_train_detector

            def evaluate(trained: nn.Module) -> dict[str, float]:
                return self.evaluate(detection_bundle(trained, {}))

            record = load_or_train_detector(spec, self.name, detector, self.train_data, evaluate, self.data_tag(),
                                            zoo_dir=self.zoo_dir, progress=progress, retrain=retrain)
            info.update(weights=record["path"], zoo=record)
        else:
            path = str(torchvision_weights_path(spec.weights))
            load_into(detector, load_state_dict_file(path), origin=path)
            info["weights"] = path
        return detection_bundle(detector, info, device)


__all__ = ["COCOMetric", "COCOTask", "DetectionMeta", "DetectionTask", "DetectorCore", "DetectorIO",
           "FashionMNISTDetectionTask", "detection_bundle", "evaluate_bundle"]
