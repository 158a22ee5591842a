"""Small architectures the project trains itself for the embedded-default tasks.

Each builder takes the input shape ``(C, H, W)`` and the number of classes, so the same
architecture serves Fashion-MNIST (1x28x28), sklearn digits (1x8x8) and CIFAR (3x32x32).
They use only conv, BN, ReLU, average pooling and linear layers (plus residual adds),
the operations an ANN-to-SNN conversion handles exactly.
"""

from __future__ import annotations

from torch import nn

from snnbench.common.activations import (DEFAULT_INITIAL_THRESHOLD, DEFAULT_LEVELS, replace_maxpool_with_avgpool,
                                         replace_relu_with_qcfs)


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class VGGSmall(nn.Module):
    """VGG-style CNN: [conv-BN-ReLU x2, avg-pool] x2, FC-ReLU, FC (width 16;
    docs/datasets-and-weights.md §4.1)."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, width: int = 16, hidden: int = 128):
        super().__init__()
        c, h, w = in_shape
        self.features = nn.Sequential(
            *_conv_bn_relu(c, width), *_conv_bn_relu(width, width), nn.AvgPool2d(2),
            *_conv_bn_relu(width, 2 * width), *_conv_bn_relu(2 * width, 2 * width), nn.AvgPool2d(2),
        )
        flat = 2 * width * (h // 4) * (w // 4)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """Pre-add residual block: conv-BN-ReLU-conv-BN, + shortcut, ReLU (He et al. 2016)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNetSmall(nn.Module):
    """ResNet-8: a conv stem and three basic blocks (widths w, 2w, 4w), global average pool, FC."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, width: int = 16):
        super().__init__()
        c = in_shape[0]
        self.stem = nn.Sequential(*_conv_bn_relu(c, width))
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.layer3 = BasicBlock(2 * width, 4 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))


def qcfs_variant(model: nn.Module, levels: int = DEFAULT_LEVELS,
                 initial_threshold: float = DEFAULT_INITIAL_THRESHOLD) -> nn.Module:
    """``model`` with every ReLU module replaced by a QCFS activation with L = ``levels`` and
    every max-pool by an average pool (Bu et al. 2022; docs/baseline-methods.md §5), in place."""
    if replace_relu_with_qcfs(model, levels, initial_threshold) == 0:
        raise ValueError(f"{type(model).__name__} has no nn.ReLU module to turn into a QCFS activation")
    replace_maxpool_with_avgpool(model)
    return model


def vgg_small_qcfs(in_shape: tuple[int, int, int], num_classes: int, levels: int = DEFAULT_LEVELS,
                   initial_threshold: float = DEFAULT_INITIAL_THRESHOLD) -> nn.Module:
    """:class:`VGGSmall` with QCFS activations (its pools are already average pools)."""
    return qcfs_variant(VGGSmall(in_shape, num_classes), levels, initial_threshold)


def resnet_small_qcfs(in_shape: tuple[int, int, int], num_classes: int, levels: int = DEFAULT_LEVELS,
                      initial_threshold: float = DEFAULT_INITIAL_THRESHOLD) -> nn.Module:
    """:class:`ResNetSmall` with QCFS activations (it has no max-pool)."""
    return qcfs_variant(ResNetSmall(in_shape, num_classes), levels, initial_threshold)


def vit_mini(in_shape: tuple[int, int, int], num_classes: int, embed_dim: int = 96, depth: int = 4,
             num_heads: int = 4, mlp_ratio: float = 2.0) -> nn.Module:
    """A small timm VisionTransformer with 16 patches (4x4 grid; patch 7 on 28x28) and a class
    token (docs/datasets-and-weights.md §4.1: 87.7 % on Fashion-MNIST after 6 epochs, ~5 min
    on 2 cores)."""
    from timm.models.vision_transformer import VisionTransformer

    c, h, w = in_shape
    patch = max(1, h // 4)
    return VisionTransformer(img_size=(h, w), patch_size=patch, in_chans=c, num_classes=num_classes,
                             embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                             class_token=True, global_pool="token")
