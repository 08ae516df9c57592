"""SimCLR (Chen et al., 2020): an encoder trained so two augmented views of a slice agree."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from radiopath.classification.nets.projector import MLPProjector
from radiopath.classification.nets.resnet2d import RESNET18_BLOCKS, resnet_encoder


class SimCLR(nn.Module):
    r"""Encoder :math:`f` (ResNet-18 by default, 512-d) and projection head :math:`g` (2-layer MLP).

    .. math:: h = f(x),\quad z = g(h)

    trained with NT-Xent on :math:`z` of two views; :math:`h` is the embedding kept afterwards.
    """

    def __init__(self, in_channels: int = 1, projection_dim: int = 128, projector_hidden: int = 512,
                 resnet_blocks: Sequence[int] = RESNET18_BLOCKS):
        super().__init__()
        self.encoder = resnet_encoder(in_channels, resnet_blocks)
        self.projector = MLPProjector(self.encoder.out_dim, projector_hidden, projection_dim, num_layers=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projections z (N, projection_dim) of images (N, C, H, W)."""
        return self.projector(self.encoder(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings h (N, 512)."""
        return self.encoder(x)
