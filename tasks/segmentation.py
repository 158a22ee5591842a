"""Semantic segmentation tasks: Pascal VOC 2012 and the embedded Fashion-MNIST canvases,
with mIoU from a confusion matrix at every time-step.

Both tasks read the VOC 2012 layout with :mod:`snnbench.tasks.data.voc`; ``fmnist_seg`` first
generates it (:mod:`snnbench.tasks.data.canvases`: real Fashion-MNIST objects on 128x128 canvases,
masks 0 = background, 1..10 = class, validation canvases from the *test* split only).

The bundle's ``core`` maps a normalised ``[B, 3, h, w]`` batch to logits
``[B, classes, h, w]``; ``prepare`` resizes and normalises the raw images (and pads a batch
of differently sized images); ``finish`` takes the logits decoded at time-step t, crops the
padding, resizes them bilinearly to each image's original size and returns the per-pixel
argmax, so predictions are scored against the original masks.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from snnbench.tasks.base import DataNotFoundError, ModelBundle, StepMetric, Task
from snnbench.tasks.data import voc
from snnbench.tasks.data.arrays import subset_indices
from snnbench.tasks.zoo import ModelSpec, get_model_spec, list_models
from snnbench.tasks.zoo.weights import load_into, load_state_dict_file, torchvision_weights_path

log = logging.getLogger(__name__)

#: the evaluation subset is drawn with this seed so every cell sees the same images
EVAL_SUBSET_SEED = 0
IGNORE_INDEX = voc.IGNORE_INDEX
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
#: VOC calibration batches are capped at this many 520x520 crops (a ResNet-50 FCN needs
#: ~0.3 GB of activations per crop; the harness default of 100 would not fit most GPUs)
VOC_MAX_CALIB_BATCH = 8


class ConfusionMIoU(StepMetric):
    """Mean intersection-over-union and pixel accuracy at every time-step.

    One int64 confusion matrix per t (rows: ground truth, columns: prediction) is built
    with ``torch.bincount`` over ``target * C + prediction`` (torchvision's
    ``references/segmentation`` habit). Pixels labelled ``ignore_index`` (VOC's 255
    borders), or with any label outside ``[0, C)``, are not counted: they go to an extra
    bin that is dropped, so no data-dependent masking is needed. Counters stay on the
    predictions' device until :meth:`compute` (on CUDA ``bincount`` itself reads the
    largest index once per call).

    For class c, ``IoU_c = N_cc / (Σ_j N_cj + Σ_i N_ic - N_cc)``. **mIoU averages IoU_c
    over the classes that occur in the ground truth or in the prediction** (union > 0;
    the ``nanmean`` of mmsegmentation); a class absent from both has no IoU and is left
    out rather than counted as 0 or 1. On full VOC val every class occurs, so this equals
    the plain mean over 21 classes. ``pixel_acc = Σ_c N_cc / Σ N``.

    Predictions must be class indices in ``[0, C)`` with the targets' shape
    ``[B, H, W]`` (what the tasks' ``finish`` returns).
    """

    name = "miou"

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._confusion: dict[int, torch.Tensor] = {}

    def update(self, t: int, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        if outputs.shape != targets.shape:
            raise ValueError(f"segmentation predictions {tuple(outputs.shape)} and targets {tuple(targets.shape)} "
                             "must have the same shape [B, H, W]")
        if outputs.is_floating_point():
            raise ValueError("segmentation predictions must be class indices (the argmax of the logits), not floats")
        n = self.num_classes
        target = targets.to(outputs.device, torch.int64).reshape(-1)
        pred = outputs.to(torch.int64).reshape(-1)
        valid = (target >= 0) & (target < n) & (target != self.ignore_index)
        index = torch.where(valid, target * n + pred, torch.full_like(target, n * n))
        counts = torch.bincount(index, minlength=n * n + 1)[: n * n]
        self._confusion[t] = self._confusion[t] + counts if t in self._confusion else counts

    def confusion(self, t: int) -> torch.Tensor:
        """The ``[C, C]`` int64 confusion matrix at ``t`` (rows: truth, columns: prediction)."""
        return self._confusion[t].reshape(self.num_classes, self.num_classes).cpu()

    @staticmethod
    def scores(confusion: torch.Tensor) -> dict[str, float]:
        """mIoU and pixel accuracy of one confusion matrix (the convention of the class docstring)."""
        conf = confusion.to(torch.float64)
        diag = conf.diagonal()
        union = conf.sum(0) + conf.sum(1) - diag
        total = conf.sum()
        if total == 0:
            raise ValueError("no labelled pixels were evaluated (every target pixel is ignored); check the masks")
        present = union > 0
        return {"miou": float((diag[present] / union[present]).mean()), "pixel_acc": float(diag.sum() / total)}

    def compute(self) -> dict[int, dict[str, float]]:
        return {t: self.scores(self.confusion(t)) for t in sorted(self._confusion)}


# --------------------------------------------------------------------------------------
@dataclass
class BatchMeta:
    """What ``finish`` needs to map logits back onto the original masks.

    Attributes:
        resized: per image, its ``(h, w)`` inside the padded core input.
        original: per image, the ``(H, W)`` of its mask.
        target_shape: ``(H_max, W_max)`` of the padded target batch.
    """

    resized: list[tuple[int, int]]
    original: list[tuple[int, int]]
    target_shape: tuple[int, int]


@dataclass(frozen=True)
class SegmentationTransform:
    """Raw uint8 images -> the core's input, and decoded logits -> predictions.

    Args:
        resize: the shorter image side after resizing (torchvision's VOC eval transform:
            520, bilinear with antialiasing), or ``None`` to keep the size.
        mean, std: per-channel normalisation of ``[0, 1]`` RGB values.
    """

    resize: int | None = None
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD

    def _normalise(self, image: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        return (image.float() / 255.0 - mean) / std

    def _resized(self, image: torch.Tensor) -> torch.Tensor:
        if self.resize is None or min(image.shape[-2:]) == self.resize:
            return image
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        return TF.resize(image, [self.resize], interpolation=InterpolationMode.BILINEAR, antialias=True)

    def prepare(self, images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, BatchMeta]:
        """``[B, 3, h_max, w_max]`` normalised input (zero-padded at the bottom/right when the
        images differ in size: zero is the mean colour) and the :class:`BatchMeta`."""
        if isinstance(images, torch.Tensor) and images.ndim == 3:
            images = [images]
        resized = [self._normalise(self._resized(img)) for img in images]
        sizes = [tuple(r.shape[-2:]) for r in resized]
        original = [tuple(img.shape[-2:]) for img in images]
        h_max, w_max = max(s[0] for s in sizes), max(s[1] for s in sizes)
        if all(s == (h_max, w_max) for s in sizes):
            x = torch.stack(resized)
        else:
            x = torch.zeros((len(resized), 3, h_max, w_max), dtype=torch.float32)
            for i, r in enumerate(resized):
                x[i, :, : r.shape[1], : r.shape[2]] = r
        target = (max(o[0] for o in original), max(o[1] for o in original))
        return x, BatchMeta(resized=sizes, original=original, target_shape=target)

    def calibration_input(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fixed-size calibration input: resized, then centre-cropped to a square of the
        shorter side (every calibration pixel is image content, none is padding)."""
        from torchvision.transforms.v2 import functional as TF

        crops = []
        for img in images:
            img = self._resized(img)
            side = min(img.shape[-2:])
            crops.append(self._normalise(TF.center_crop(img, [side, side])))
        sizes = {tuple(c.shape) for c in crops}
        if len(sizes) > 1:  # only without a resize: differently sized images, crop to the smallest
            side = min(s[-1] for s in sizes)
            crops = [TF.center_crop(c, [side, side]) for c in crops]
        return torch.stack(crops)

    @staticmethod
    def finish(logits: torch.Tensor, meta: BatchMeta) -> torch.Tensor:
        """Per-pixel class indices ``[B, H_max, W_max]`` at the masks' resolution (0 outside
        each image; those pixels are padded with the ignore index in the targets)."""
        if logits.ndim != 4:
            raise ValueError(f"segmentation logits must be [B, classes, H, W]; got {tuple(logits.shape)}")
        first_r, first_o = meta.resized[0], meta.original[0]
        if all(r == first_r for r in meta.resized) and all(o == first_o for o in meta.original):
            crop = logits[..., : first_r[0], : first_r[1]]
            if tuple(crop.shape[-2:]) != first_o:
                crop = F.interpolate(crop, size=first_o, mode="bilinear", align_corners=False)
            return crop.argmax(1)
        out = torch.zeros((logits.shape[0], *meta.target_shape), dtype=torch.int64, device=logits.device)
        for i, ((h, w), (H, W)) in enumerate(zip(meta.resized, meta.original)):
            crop = logits[i: i + 1, :, :h, :w]
            if (h, w) != (H, W):
                crop = F.interpolate(crop, size=(H, W), mode="bilinear", align_corners=False)
            out[i, :H, :W] = crop[0].argmax(0)
        return out


def collate(samples: Sequence[voc.VOCSample]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Raw images (a list: they may differ in size) and masks padded with the ignore index."""
    images = [s.image for s in samples]
    h = max(s.mask.shape[0] for s in samples)
    w = max(s.mask.shape[1] for s in samples)
    targets = torch.full((len(samples), h, w), IGNORE_INDEX, dtype=torch.int64)
    for i, s in enumerate(samples):
        targets[i, : s.mask.shape[0], : s.mask.shape[1]] = s.mask
    return images, targets


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


__all__ = ["BatchMeta", "ConfusionMIoU", "FashionMNISTSegmentationTask", "SegmentationTask", "SegmentationTransform",
           "VOCTask", "collate"]
