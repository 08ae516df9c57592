"""The RGCNN image encoder: a plain 3-D CNN in the spirit of Deep Profiler (Lou et al., 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class CNN3d(nn.Module):
    r"""Stacked ``conv3x3x3 -> BatchNorm -> ReLU -> max-pool 2`` blocks and global average pooling.

    .. math:: h_0 = x,\quad h_{l+1} = \mathrm{pool}(a_l),\quad a_l = \mathrm{ReLU}(\mathrm{BN}(W_l * h_l)),
              \quad y = \mathrm{mean}_{\text{voxels}}(a_{L-1})

    :meth:`feature_maps` returns the activations :math:`a_l` (before pooling), from which
    the CNN-based radiomics are the per-channel sums :math:`\sum_{\text{voxels}} a_l`.
    """

    def __init__(self, in_channels: int = 6, widths: Sequence[int] = (8, 16, 24, 48), dropout: float = 0.0):
        super().__init__()
        blocks, previous = [], in_channels
        for width in widths:
            blocks.append(nn.Sequential(
                nn.Conv3d(previous, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm3d(width),
                nn.ReLU(inplace=True),
            ))
            previous = width
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool3d(2)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = previous

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations of every block, (N, width_l, D_l, H_l, W_l), before its pooling."""
        maps = []
        for index, block in enumerate(self.blocks):
            x = block(x if index == 0 else self.pool(x))
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, D, H, W) -> representation y (N, out_dim)."""
        return self.dropout(self.feature_maps(x)[-1].mean(dim=(2, 3, 4)))

    def map_sums(self, x: torch.Tensor, layers: Sequence[int] | None = None) -> torch.Tensor:
        """CNN-based radiomics: per-channel sums of the chosen blocks' maps, (N, sum of widths)."""
        maps = self.feature_maps(x)
        chosen = range(len(maps)) if layers is None else layers
        return torch.cat([maps[layer].sum(dim=(2, 3, 4)) for layer in chosen], dim=1)
