"""Semantic segmentation tasks: Pascal VOC 2012 and the embedded Fashion-MNIST canvases,
with mIoU from a confusion matrix at every time-step.

Both tasks read the VOC 2012 layout with :mod:`snnbench.tasks.data.voc`; ``fmnist_seg`` first
generates it (:mod:`snnbench.tasks.data.canvases`: real Fashion-MNIST objects on 128x128 canvases,
masks 0 = background, 1..10 = class, validation canvases from the *test* split only).

The bundle's ``core`` maps a normalised ``[B, 3, h, w]`` batch to logits
``[B, classes, h, w]``; its ``prepare`` and ``finish`` are those of
:class:`~snnbench.tasks.segmentation_transform.SegmentationTransform`, and the metric is
:class:`~snnbench.tasks.miou_metric.ConfusionMIoU`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import torch
from torch import nn

from snnbench.tasks.base import DataNotFoundError, ModelBundle, StepMetric, Task
from snnbench.tasks.data import voc
from snnbench.tasks.data.arrays import subset_indices
from snnbench.tasks.data.voc import collate
from snnbench.tasks.miou_metric import ConfusionMIoU
from snnbench.tasks.segmentation_transform import SegmentationTransform
from snnbench.tasks.zoo import ModelSpec, get_model_spec, list_models
from snnbench.tasks.zoo.weights import load_into, load_state_dict_file, torchvision_weights_path

log = logging.getLogger(__name__)

#: the evaluation subset is drawn with this seed so every cell sees the same images
EVAL_SUBSET_SEED = 0
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
#: VOC calibration batches are capped at this many 520x520 crops (a ResNet-50 FCN needs
#: ~0.3 GB of activations per crop; the harness default of 100 would not fit most GPUs)
VOC_MAX_CALIB_BATCH = 8


def check_model_fits(task: Task, spec: ModelSpec) -> None:
    if task.name not in spec.tasks:
        raise ValueError(f"model {spec.name!r} does not fit task {task.name!r} (it serves: {', '.join(spec.tasks)}). "
                         f"Models for {task.name}: {', '.join(task.models())}")


def load_segmenter_weights(net: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load a state dict into ``net``; for a wrapped torchvision segmenter the keys may be
    the bare model's (torchvision files), and ``aux_classifier.*`` (training-only) is dropped."""
    from snnbench.tasks.zoo.segmentation_models import SegmentationLogits

    if isinstance(net, SegmentationLogits):
        state = {k.removeprefix("model."): v for k, v in state.items()}
        aux = [k for k in state if k.startswith("aux_classifier.")]
        if aux:
            log.info("dropping %d aux_classifier tensors of %s (aux_loss is off)", len(aux), origin)
        load_into(net.model, {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}, origin)
    else:
        load_into(net, state, origin)


# --------------------------------------------------------------------------------------
class SegmentationTask(Task):
    """A task reading the VOC 2012 segmentation layout; subclasses say where it is."""

    kind = "segmentation"
    metric = "miou"
    #: number of classes, background included
    num_classes: ClassVar[int] = 21
    classes: ClassVar[tuple[str, ...]] = VOC_CLASSES
    #: shorter side of the core's input (None: keep the image size)
    resize: ClassVar[int | None] = None

    def __init__(self, data_root: str | None = None, zoo_dir: str | None = None) -> None:
        super().__init__(data_root)
        self.zoo_dir = zoo_dir
        self._splits: voc.VOCSplits | None = None

    def locate(self) -> str | os.PathLike:
        """The VOC tree's root (generating it first where the task can)."""
        raise NotImplementedError

    def voc_splits(self) -> voc.VOCSplits:
        if self._splits is None:
            self._splits = voc.split_ids(self.locate())
        return self._splits

    def dataset(self, which: str) -> voc.VOCSegmentation:
        """``calibration`` or ``evaluation`` images and masks."""
        splits = self.voc_splits()
        ids = splits.calibration if which == "calibration" else splits.evaluation
        return voc.VOCSegmentation(splits.root, ids, self.num_classes)

    def check_data(self) -> None:
        splits = self.voc_splits()
        voc.find_image(splits.root, splits.evaluation[0])  # fail early on an empty JPEGImages/

    def splits(self) -> dict[str, str]:
        s = self.voc_splits()
        return {"calibration": s.calibration_split, "evaluation": s.evaluation_split}

    def eval_set_size(self) -> int:
        return len(self.voc_splits().evaluation)

    def models(self) -> list[str]:
        return list_models(task=self.name)

    def transform(self) -> SegmentationTransform:
        return SegmentationTransform(resize=self.resize)

    def bundle(self, net: nn.Module, device: str | torch.device, info: dict[str, Any]) -> ModelBundle:
        transform = self.transform()
        info.update(transform=transform, num_classes=self.num_classes)
        return ModelBundle(core=net.eval().to(device), prepare=transform.prepare, finish=transform.finish, info=info)

    def calib_batches(self, size: int, batch_size: int, seed: int, bundle: ModelBundle) -> Iterator[torch.Tensor]:
        data = self.dataset("calibration")
        transform: SegmentationTransform = bundle.info.get("transform") or self.transform()
        indices = subset_indices(len(data), size, seed)
        for start in range(0, len(indices), batch_size):
            yield transform.calibration_input([data[int(i)].image for i in indices[start:start + batch_size]])

    def eval_batches(self, size: int | None, batch_size: int, bundle: ModelBundle) -> Iterator[tuple[Any, Any]]:
        data = self.dataset("evaluation")
        indices = subset_indices(len(data), size, EVAL_SUBSET_SEED)
        for start in range(0, len(indices), batch_size):
            yield collate([data[int(i)] for i in indices[start:start + batch_size]])

    def new_metric(self) -> StepMetric:
        return ConfusionMIoU(self.num_classes)


class VOCTask(SegmentationTask):
    """Pascal VOC 2012 segmentation val (VOC layout under --data-root), mIoU over 21 classes.

    Images are resized to a shorter side of 520 and normalised with the ImageNet mean/std
    (torchvision's eval transform for its VOC-label weights); predictions are resized back
    and scored against the original masks (the standard VOC protocol; torchvision's
    reference scores at 520 instead). Batches of differently sized images are zero-padded;
    the default batch size is 1 (torchvision's reference), which needs no padding.
    """

    name = "voc"
    description = "Pascal VOC 2012 segmentation val (VOC layout under --data-root), mIoU; torchvision FCN/DeepLabv3"
    default_batch_size = 1
    num_classes = 21
    classes = VOC_CLASSES
    resize = 520

    def locate(self) -> str | os.PathLike:
        if not self.data_root:
            voc.resolve_root(None)  # raises with the expected layout
        return self.data_root  # type: ignore[return-value]

    def default_model(self) -> str:
        return "fcn_resnet50"

    def calib_batches(self, size: int, batch_size: int, seed: int, bundle: ModelBundle) -> Iterator[torch.Tensor]:
        if batch_size > VOC_MAX_CALIB_BATCH:
            log.info("VOC calibration batches capped at %d crops of 520x520 (asked %d)", VOC_MAX_CALIB_BATCH,
                     batch_size)
        yield from super().calib_batches(size, min(batch_size, VOC_MAX_CALIB_BATCH), seed, bundle)

    def build(self, model: str, weights: str | None = None, device: str | torch.device = "cpu",
              progress: bool = True) -> ModelBundle:
        spec = get_model_spec(model)
        check_model_fits(self, spec)
        if weights:
            path = str(weights)
        elif spec.source == "torchvision" and spec.weights:
            path = str(torchvision_weights_path(spec.weights))
        else:
            raise DataNotFoundError(f"model {spec.name} has no default weights for {self.name}; pass --weights FILE")
        net = spec.build(spec, num_classes=self.num_classes)
        load_segmenter_weights(net, load_state_dict_file(path), origin=path)
        return self.bundle(net, device, {"model": model, "weights": os.path.abspath(path)})


@dataclass(frozen=True)
class CanvasCounts:
    """How many canvases ``fmnist_seg`` generates (train: for the zoo and calibration)."""

    train: int = 4000
    val: int = 500


class FashionMNISTSegmentationTask(SegmentationTask):
    """Real Fashion-MNIST objects on 128x128 canvases with VOC-style masks (0 background,
    1..10 the classes), written once in the VOC layout under ``$SNNBENCH_DATA_DIR/fmnist_seg``
    (default ``~/.cache/snnbench/data``); 4,000 training canvases from the Fashion-MNIST
    train split, 500 validation canvases from its test split. ``--data-root`` locates the
    Fashion-MNIST IDX files as for ``fashion_mnist``. mIoU over 11 classes."""

    name = "fmnist_seg"
    description = ("Fashion-MNIST canvases with VOC masks (4,000 train / 500 val, 128x128, 11 classes), mIoU; "
                   "generated from Debian dataset-fashion-mnist")
    default_batch_size = 50
    num_classes = 11
    classes = ("background", "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
               "Bag", "Ankle boot")
    counts: ClassVar[CanvasCounts] = CanvasCounts()

    def canvas_dataset(self):
        from snnbench.tasks.data.canvases import CanvasDataset

        return CanvasDataset("voc", self.counts.train, self.counts.val)

    def locate(self) -> str | os.PathLike:
        from snnbench.tasks.data.canvases import default_data_dir, ensure_canvases

        return ensure_canvases(default_data_dir(self.name), self.canvas_dataset(), fmnist_root=self.data_root)

    def default_model(self) -> str:
        return "fcn_mobilenet_v2"

    def build(self, model: str, weights: str | None = None, device: str | torch.device = "cpu",
              progress: bool = True, retrain: bool = False) -> ModelBundle:
        spec = get_model_spec(model)
        check_model_fits(self, spec)
        net = spec.build(spec, num_classes=self.num_classes)
        info: dict[str, Any] = {"model": model}
        if weights:
            load_segmenter_weights(net, load_state_dict_file(weights), origin=str(weights))
            info["weights"] = os.path.abspath(weights)
        elif spec.source == "zoo":
            from snnbench.tasks.zoo.segmentation_training import load_or_train_segmenter

            record = load_or_train_segmenter(spec, self, net, zoo_dir=self.zoo_dir, progress=progress,
                                             retrain=retrain)
            info.update(weights=record["path"], zoo=record)
        else:
            raise DataNotFoundError(f"model {spec.name} has no default weights for {self.name}; pass --weights FILE")
        return self.bundle(net, device, info)


__all__ = ["CanvasCounts", "FashionMNISTSegmentationTask", "SegmentationTask", "VOCTask", "check_model_fits",
           "load_segmenter_weights"]
