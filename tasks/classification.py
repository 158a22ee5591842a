"""Image classification tasks: Fashion-MNIST (embedded default), sklearn digits, CIFAR-10/100
and ImageNet, with top-1/top-5 accumulated at every time-step."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from snnbench.common.outcomes import BinaryOutcomes
from snnbench.tasks.base import DataNotFoundError, ModelBundle, StepMetric, Task
from snnbench.tasks.data import cifar, digits, fashion_mnist, imagenet
from snnbench.tasks.data.arrays import ImageArrays, subset_indices
from snnbench.tasks.zoo import ModelSpec, get_model_spec, list_models
from snnbench.tasks.zoo.weights import (adapt_state_dict, load_into, load_state_dict_file,
                                        package_efficientnet_lite0_path, package_mobilenet_v2_path, timm_weights_path,
                                        torchvision_weights_path)

log = logging.getLogger(__name__)

#: the evaluation subset is drawn with this seed so every cell sees the same images
EVAL_SUBSET_SEED = 0


class TopKAccuracy(StepMetric):
    """Top-1 and top-5 accuracy at every time-step.

    Counters stay on the outputs' device until :meth:`compute`, so updating inside the
    time loop never forces a host-device synchronisation.
    """

    name = "top1"

    def __init__(self) -> None:
        self._correct1: dict[int, torch.Tensor] = {}
        self._correct5: dict[int, torch.Tensor] = {}
        self._count: dict[int, int] = defaultdict(int)
        self._hits1: dict[int, list[torch.Tensor]] = defaultdict(list)

    def update(self, t: int, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        if outputs.ndim != 2:
            raise ValueError(f"classification outputs must be [B, classes]; got {tuple(outputs.shape)}")
        targets = targets.to(outputs.device)
        k = min(5, outputs.shape[1])
        topk = outputs.topk(k, dim=1).indices
        hit = topk == targets.view(-1, 1)
        c1 = hit[:, 0].sum()
        c5 = hit.any(dim=1).sum()
        self._hits1[t].append(hit[:, 0])
        self._correct1[t] = self._correct1[t] + c1 if t in self._correct1 else c1
        self._correct5[t] = self._correct5[t] + c5 if t in self._correct5 else c5
        self._count[t] += int(targets.shape[0])

    def compute(self) -> dict[int, dict[str, float]]:
        return {t: {"top1": int(self._correct1[t]) / n, "top5": int(self._correct5[t]) / n}
                for t, n in sorted(self._count.items()) if n}

    def outcomes(self) -> BinaryOutcomes | None:
        """Whether each sample's top-1 prediction was right, per updated t (in update order)."""
        return binary_outcomes(self._hits1, self._count)


def binary_outcomes(hits: dict[int, list[torch.Tensor]], count: dict[int, int]) -> BinaryOutcomes | None:
    """Stack per-batch boolean hits into ``BinaryOutcomes`` ``[len(t), n]`` (None if nothing was scored)."""
    ts = [t for t, n in sorted(count.items()) if n]
    if not ts:
        return None
    rows = [torch.cat(hits[t]).cpu().numpy() for t in ts]
    if len({row.size for row in rows}) != 1:  # not one sample set: nothing to pair or resample
        log.warning("time-steps scored different numbers of samples (%s); no per-sample outcomes kept",
                    [row.size for row in rows])
        return None
    return BinaryOutcomes(t=np.asarray(ts, dtype=np.int64), correct=np.stack(rows).astype(bool))


def check_model_fits(task: Task, spec: ModelSpec) -> None:
    if task.name not in spec.tasks:
        raise ValueError(f"model {spec.name!r} does not fit task {task.name!r} (it serves: {', '.join(spec.tasks)}). "
                         f"Models for {task.name}: {', '.join(task.models())}")


def default_weights_path(spec: ModelSpec) -> str:
    """Local file of a spec's default pretrained weights (torchvision, timm or package)."""
    if spec.source == "package" and spec.name == "mobilenet_v2":
        return str(package_mobilenet_v2_path())
    if spec.source == "package" and spec.name == "efficientnet_lite0":
        return str(package_efficientnet_lite0_path())
    if spec.source in ("torchvision", "package") and spec.weights:
        return str(torchvision_weights_path(spec.weights))
    if spec.source == "timm":
        return str(timm_weights_path(spec.meta.get("arch", spec.name), spec.weights))
    raise DataNotFoundError(f"model {spec.name} has no default weights; pass --weights FILE")


class ArrayClassificationTask(Task):
    """A classification task whose splits fit in memory (Fashion-MNIST, digits, CIFAR)."""

    kind = "classification"
    metric = "top1"
    default_batch_size = 200

    def __init__(self, data_root: str | None = None, zoo_dir: str | None = None) -> None:
        super().__init__(data_root)
        self.zoo_dir = zoo_dir
        self._splits: dict[str, ImageArrays] = {}

    def load_split(self, split: str) -> ImageArrays:
        raise NotImplementedError

    def split(self, split: str) -> ImageArrays:
        if split not in self._splits:
            self._splits[split] = self.load_split(split)
        return self._splits[split]

    def models(self) -> list[str]:
        return list_models(task=self.name)

    def check_data(self) -> None:
        self.split("test")

    def sweep_models(self) -> list[str]:
        """The task's models of the plain track (QCFS-track models are swept when named)."""
        from snnbench.tasks.zoo import model_track

        return [m for m in self.models() if model_track(m) == "plain"]

    def default_model(self) -> str:
        return "vgg_small"

    def eval_set_size(self) -> int:
        return len(self.split("test"))

    def build(self, model: str, weights: str | None = None, device: str | torch.device = "cpu",
              progress: bool = True, retrain: bool = False) -> ModelBundle:
        spec = get_model_spec(model)
        check_model_fits(self, spec)
        test = self.split("test")
        net = spec.build(spec, in_shape=test.shape, num_classes=test.num_classes)
        info: dict[str, Any] = {"model": model, "input_shape": list(test.shape)}
        if weights:
            load_into(net, load_state_dict_file(weights), origin=weights)
            info["weights"] = os.path.abspath(weights)
        elif spec.source == "zoo":
            from snnbench.tasks.zoo.provide import load_or_train

            record = load_or_train(spec, self.name, net, self.split("train"), test, zoo_dir=self.zoo_dir,
                                   progress=progress, retrain=retrain)
            info.update(weights=record["path"], zoo=record)
        else:
            path = default_weights_path(spec)
            load_into(net, load_state_dict_file(path), origin=path)
            info["weights"] = path
        return ModelBundle(core=net.eval().to(device), info=info)

    def calib_batches(self, size: int, batch_size: int, seed: int, bundle: ModelBundle) -> Iterator[torch.Tensor]:
        train = self.split("train")
        for x, _ in train.batches(subset_indices(len(train), size, seed), batch_size):
            yield x

    def eval_batches(self, size: int | None, batch_size: int, bundle: ModelBundle) -> Iterator[tuple[Any, Any]]:
        test = self.split("test")
        yield from test.batches(subset_indices(len(test), size, EVAL_SUBSET_SEED), batch_size)

    def new_metric(self) -> StepMetric:
        return TopKAccuracy()


class FashionMNISTTask(ArrayClassificationTask):
    """Fashion-MNIST 10-class clothing images (full 60k/10k, MIT), the embedded default."""

    name = "fashion_mnist"
    description = "Fashion-MNIST (60k train / 10k test, 28x28), top-1; Debian dataset-fashion-mnist"

    def load_split(self, split: str) -> ImageArrays:
        return fashion_mnist.load_split(split, self.data_root)


class DigitsTask(ArrayClassificationTask):
    """scikit-learn digits (1,437 train / 360 test, 8x8): tiny, always available, for fast tests."""

    name = "digits"
    description = "sklearn digits (1,437 train / 360 test, 8x8), top-1; ships with scikit-learn"
    default_batch_size = 360

    def load_split(self, split: str) -> ImageArrays:
        return digits.load_split(split)


class CIFAR10Task(ArrayClassificationTask):
    """CIFAR-10 from the python-pickle layout under --data-root (never downloaded)."""

    name = "cifar10"
    description = "CIFAR-10 (50k/10k, 32x32), top-1; needs --data-root with cifar-10-batches-py/"

    def load_split(self, split: str) -> ImageArrays:
        return cifar.load_split(10, split, self.data_root)


class CIFAR100Task(ArrayClassificationTask):
    """CIFAR-100 from the python-pickle layout under --data-root (never downloaded)."""

    name = "cifar100"
    description = "CIFAR-100 (50k/10k, 32x32), top-1; needs --data-root with cifar-100-python/"

    def load_split(self, split: str) -> ImageArrays:
        return cifar.load_split(100, split, self.data_root)


def eval_transform(spec: ModelSpec, net: nn.Module) -> Callable:
    """The standard evaluation transform of a pretrained ImageNet model (timm's data config for timm models)."""
    from snnbench.tasks.zoo.catalog import build_timm

    if spec.source == "timm" or spec.build is build_timm:
        import timm.data

        config = timm.data.resolve_data_config({}, model=net)
        return timm.data.create_transform(**config, is_training=False)
    import torchvision

    if spec.weights:
        return torchvision.models.get_weight(spec.weights).transforms()
    from torchvision.transforms import v2  # pragma: no cover - every built-in spec names its weights

    return v2.Compose([v2.Resize(256), v2.CenterCrop(224), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


def build_imagenet_classifier(task: Task, model: str, weights: str | None,
                              device: str | torch.device) -> ModelBundle:
    """An ImageNet classifier with its weights (``weights`` or the spec's default file) and
    its evaluation transform in ``info["transform"]``; shared by the ImageNet-input tasks."""
    spec = get_model_spec(model)
    check_model_fits(task, spec)
    net = spec.build(spec, num_classes=1000)
    path = weights or default_weights_path(spec)
    load_into(net, adapt_state_dict(load_state_dict_file(path)), origin=path)
    info = {"model": model, "weights": os.path.abspath(path), "transform": eval_transform(spec, net)}
    return ModelBundle(core=net.eval().to(device), info=info)


class ImageNetTask(Task):
    """ImageNet-1k validation (ImageFolder layout under --data-root), top-1/top-5."""

    name = "imagenet"
    kind = "classification"
    metric = "top1"
    description = "ImageNet-1k val (ImageFolder under --data-root), top-1/top-5; torchvision/timm models"
    default_batch_size = 50

    def __init__(self, data_root: str | None = None, zoo_dir: str | None = None, num_workers: int | None = None):
        super().__init__(data_root)
        self.num_workers = num_workers
        self._samples: dict[str, Any] | None = None

    def samples(self) -> dict[str, Any]:
        if self._samples is None:
            self._samples = imagenet.split_samples(self.data_root)
        return self._samples

    def splits(self) -> dict[str, str]:
        return {"calibration": self.samples()["calibration_split"], "evaluation": "val"}

    def check_data(self) -> None:
        self.samples()

    def models(self) -> list[str]:
        return list_models(task=self.name)

    def default_model(self) -> str:
        return "mobilenet_v2"

    def eval_set_size(self) -> int:
        return len(self.samples()["evaluation"])

    def build(self, model: str, weights: str | None = None, device: str | torch.device = "cpu",
              progress: bool = True) -> ModelBundle:
        return build_imagenet_classifier(self, model, weights, device)

    def _loader(self, samples: list, batch_size: int, bundle: ModelBundle):
        dataset = imagenet.ImageList(samples, bundle.info["transform"])
        workers = self.num_workers if self.num_workers is not None else (min(2, os.cpu_count() or 1)
                                                                         if len(samples) > 200 else 0)
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)

    def calib_batches(self, size: int, batch_size: int, seed: int, bundle: ModelBundle) -> Iterator[torch.Tensor]:
        pool = self.samples()["calibration"]
        chosen = [pool[i] for i in subset_indices(len(pool), size, seed)]
        for x, _ in self._loader(chosen, batch_size, bundle):
            yield x

    def eval_batches(self, size: int | None, batch_size: int, bundle: ModelBundle) -> Iterator[tuple[Any, Any]]:
        pool = self.samples()["evaluation"]
        chosen = [pool[i] for i in subset_indices(len(pool), size, EVAL_SUBSET_SEED)]
        yield from self._loader(chosen, batch_size, bundle)

    def new_metric(self) -> StepMetric:
        return TopKAccuracy()


__all__ = ["TopKAccuracy", "FashionMNISTTask", "DigitsTask", "CIFAR10Task", "CIFAR100Task", "ImageNetTask"]
