"""Radiomics-Guided CNN (Tsai et al.): a 3-D CNN aligned with scalar radiomics by contrast."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from radiopath.classification.nets.cnn3d import CNN3d
from radiopath.classification.nets.projector import MLPProjector


class RGCNN(nn.Module):
    r"""Image encoder :math:`f_i` with a classifier, image projector :math:`g_i` and radiomics projector :math:`g_r`.

    .. math:: y_i = f_i(v),\quad \hat p = \mathrm{softmax}(W y_i),\quad z_i = g_i(y_i),\quad z_r = g_r(r)

    trained with :math:`\mathcal{L} = \mathcal{L}^{fl}(\hat p, y) + \lambda\,\mathcal{L}^{cl}([z_i; z_r], [y; y])`.
    ``g_i`` has 2 layers and ``g_r`` 3, as in the paper; at test time only
    ``f_i`` and the classifier run (:meth:`forward`).
    """

    def __init__(
        self,
        in_channels: int,
        radiomics_dim: int,
        widths: Sequence[int] = (8, 16, 24, 48),
        projection_dim: int = 64,
        projector_hidden: int = 128,
        num_classes: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.encoder = CNN3d(in_channels, widths, dropout)
        self.classifier = nn.Linear(self.encoder.out_dim, num_classes)
        self.image_projector = MLPProjector(self.encoder.out_dim, projector_hidden, projection_dim, num_layers=2)
        self.radiomics_projector = MLPProjector(radiomics_dim, projector_hidden, projection_dim, num_layers=3)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes) from the image alone."""
        return self.classifier(self.encoder(volume))

    def training_outputs(self, volume: torch.Tensor, radiomics: torch.Tensor):
        """``(logits, z_i, z_r)`` for the combined training loss."""
        y_i = self.encoder(volume)
        return self.classifier(y_i), self.image_projector(y_i), self.radiomics_projector(radiomics)
