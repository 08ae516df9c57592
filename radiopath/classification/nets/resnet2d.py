"""ResNet (torchvision, random init) as a 2-D feature extractor for CT slices."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

RESNET18_BLOCKS = (2, 2, 2, 2)


def resnet_encoder(in_channels: int = 1, blocks: Sequence[int] = RESNET18_BLOCKS) -> nn.Module:
    """torchvision ResNet without weights, ``in_channels`` input planes, 512-d pooled output.

    ``blocks`` counts the basic blocks of the four stages: ``(2, 2, 2, 2)`` is ResNet-18
    (the papers'), ``(1, 1, 1, 1)`` the half-depth ResNet-10 of the demo. The stem
    convolution is swapped for one with ``in_channels`` planes (CT slices are grey-level)
    and the classification layer for the identity, so the output is the
    global-average-pooled 512-d representation.
    """
    if len(blocks) != 4 or min(blocks) < 1:
        raise ValueError(f"resnet blocks must be four counts >= 1, got {list(blocks)}")
    model = ResNet(BasicBlock, [int(b) for b in blocks])
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = nn.Identity()
    model.out_dim = 512
    return model
