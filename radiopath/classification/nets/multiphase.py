"""Multi-phase CNN (late fusion): one 2-D ResNet-18 per CT phase, features fused by an MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from radiopath.classification.nets.resnet2d import RESNET18_BLOCKS, resnet_encoder


class MultiPhaseResNet(nn.Module):
    r"""Per-phase ResNet-18 features :math:`h_p`, zeroed where a phase is missing, then an MLP.

    .. math:: u = [m_1 h_1(x_1), \ldots, m_P h_P(x_P), m_1, \ldots, m_P],\quad
              \mathrm{logits} = W_2\,\mathrm{Dropout}(\mathrm{ReLU}(W_1 u))

    where :math:`m_p \in \{0, 1\}` says whether phase :math:`p` exists for the patient: a
    missing phase contributes zero features and its indicator, and its encoder never
    sees the patient (so a placeholder image cannot shift BatchNorm statistics). In
    training, a phase present for only one case of a batch is masked as missing for that step.
    """

    def __init__(self, n_phases: int, hidden_dim: int = 128, num_classes: int = 2, dropout: float = 0.2,
                 resnet_blocks: Sequence[int] = RESNET18_BLOCKS):
        super().__init__()
        self.encoders = nn.ModuleList(resnet_encoder(1, resnet_blocks) for _ in range(n_phases))
        feature_dim = self.encoders[0].out_dim
        self.feature_dim = feature_dim
        self.head = nn.Sequential(
            nn.Linear(n_phases * (feature_dim + 1), hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )

    def forward(self, images: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``images`` (N, P, H, W), ``present`` (N, P) bool -> logits (N, num_classes)."""
        present = present.clone()
        if self.training:
            # BatchNorm cannot train on one sample: a phase present for a single case of the
            # batch is treated as missing for this step (a phase dropout, never at inference).
            present[:, present.sum(dim=0) == 1] = False
        features = []
        for phase, encoder in enumerate(self.encoders):
            rows = present[:, phase]
            h = images.new_zeros(len(images), self.feature_dim)
            if rows.any():
                h[rows] = encoder(images[rows, phase, None])
            features.append(h)
        return self.head(torch.cat([*features, present.to(images.dtype)], dim=1))
