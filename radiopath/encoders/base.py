"""The two encoder interfaces every registered encoder implements."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from radiopath.preprocess.ct import PreparedCT


class TileEncoder(nn.Module, abc.ABC):
    """Pathology tile encoder: RGB tiles -> one vector per tile.

    Subclasses set ``name``, ``embed_dim``, ``input_size`` (pixels, square) and the
    ``mean``/``std`` normalisation their published weights expect, and implement
    :meth:`forward` on normalised ``(N, 3, input_size, input_size)`` tensors.
    """

    name: str
    embed_dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def prepare(self, tiles: np.ndarray) -> torch.Tensor:
        """uint8 tiles ``(N, H, W, 3)`` -> normalised float tensor at ``input_size``."""
        batch = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float() / 255.0
        if batch.shape[-1] != self.input_size or batch.shape[-2] != self.input_size:
            batch = nn.functional.interpolate(
                batch, size=(self.input_size, self.input_size), mode="bilinear", antialias=True, align_corners=False
            )
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (batch - mean) / std

    @torch.inference_mode()
    def encode_tiles(self, tiles: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
        """Vectors ``(N, embed_dim)`` float32 for uint8 tiles ``(N, H, W, 3)``."""
        batch = self.prepare(tiles).to(device)
        return self(batch).float().cpu().numpy()


class VolumeEncoder(abc.ABC):
    """CT encoder: a preprocessed CT case -> patch vectors and their positions in mm."""

    name: str
    embed_dim: int

    @abc.abstractmethod
    def encode(self, ct: "PreparedCT", device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
        """Return ``(features (N, D) float32, coords (N, 3) float32 in mm, x/y/z order)``."""

    def patch_size_mm(self, ct: "PreparedCT") -> tuple[float, float, float]:
        """Extent (x, y, z) in mm of one patch; one voxel unless the encoder says otherwise."""
        return tuple(float(s) for s in ct.image.GetSpacing())
