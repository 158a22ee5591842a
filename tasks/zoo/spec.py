"""Model specifications: what a model is, which tasks it fits and where its weights live."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from torch import nn

WeightSource = Literal["zoo", "torchvision", "timm", "package", "none"]
#: which kind of ANN a model is: ``plain`` (trained as usual; every training-free method
#: applies) or ``qcfs`` (trained with QCFS activations, Bu et al. 2022; its rows form their
#: own leaderboard track and are never ranked against plain-ANN rows)
Track = Literal["plain", "qcfs"]
TRACKS: tuple[str, ...] = ("plain", "qcfs")


@dataclass(frozen=True)
class TrainRecipe:
    """How the zoo trains a model on a dataset (fixed seed, so the result is reproducible)."""

    epochs: int
    batch_size: int = 128
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    hflip: bool = False
    seed: int = 0

    def key(self) -> str:
        """Short stable text folded into the cache file name."""
        return (f"e{self.epochs}-b{self.batch_size}-{self.optimizer}{self.lr:g}-wd{self.weight_decay:g}"
                f"-ls{self.label_smoothing:g}-f{int(self.hflip)}-s{self.seed}")


@dataclass(frozen=True)
class ModelSpec:
    """A buildable model.

    Attributes:
        name: registry name (``vgg_small``, ``resnet18`` ...).
        description: one line for ``bench list``.
        family: task kind it serves: classification, detection or segmentation.
        tasks: names of the tasks that can build it.
        build: ``build(spec, **task_args) -> nn.Module`` without weights (task_args are
            e.g. ``in_shape`` and ``num_classes`` for classification).
        source: where default weights come from: trained by the project's ``zoo``,
            the ``torchvision`` or ``timm`` caches, a Python ``package``, or ``none``.
        weights: source-specific reference (torchvision weights enum name such as
            ``"ResNet18_Weights.IMAGENET1K_V1"``, a timm pretrained tag, a package getter).
        recipes: per-task training recipe for zoo models.
        meta: free-form metadata (input config, paper reference ...).
        track: ``plain`` or ``qcfs`` (see :data:`Track`), recorded in every result.
    """

    name: str
    description: str
    family: str
    tasks: tuple[str, ...]
    build: Callable[..., nn.Module]
    source: WeightSource = "none"
    weights: str | None = None
    recipes: dict[str, TrainRecipe] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    track: Track = "plain"

    def __post_init__(self) -> None:
        if self.track not in TRACKS:
            raise ValueError(f"model {self.name!r}: track must be one of {', '.join(TRACKS)}; got {self.track!r}")
