"""ResNet-18 (torchvision, random init) as a 2-D feature extractor for CT slices."""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18


def resnet18_encoder(in_channels: int = 1) -> nn.Module:
    """torchvision ResNet-18 without weights, ``in_channels`` input planes, 512-d pooled output.

    The stem convolution is swapped for one with ``in_channels`` planes (CT slices are
    grey-level) and the classification layer for the identity, so the output is the
    global-average-pooled 512-d representation.
    """
    model = resnet18(weights=None)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = nn.Identity()
    model.out_dim = 512
    return model
