"""Classification and contrastive losses of the deep CT pipelines.

- :class:`FocalLoss` (Lin et al., 2017): the RGCNN's classification loss.
- :class:`SupConLoss` (Khosla et al., 2020): the RGCNN's image-radiomics alignment.
- :class:`NTXentLoss` (Chen et al., 2020): SimCLR's loss, SupCon with one positive per view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FocalLoss(nn.Module):
    r"""Focal loss over softmax class probabilities, averaged over the batch.

    .. math:: \mathcal{L}^{fl} = -(1 - p_t)^{\gamma} \log p_t

    where :math:`p_t` is the predicted probability of the true class; :math:`\gamma = 0`
    is cross-entropy, larger :math:`\gamma` down-weights well-classified examples.
    """

    def __init__(self, gamma: float = 2.0):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits`` (N, C), integer ``target`` (N,) -> scalar loss."""
        log_pt = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        weight = (1.0 - log_pt.exp()).clamp(min=0.0) ** self.gamma
        return -(weight * log_pt).mean()


class SupConLoss(nn.Module):
    r"""Supervised contrastive loss on L2-normalised embeddings, averaged over anchors.

    .. math::
        \mathcal{L}^{cl}_i = \frac{-1}{|P(i)|} \sum_{p \in P(i)}
            \log \frac{\exp(z_i \cdot z_p / \tau)}{\sum_{k \neq i} \exp(z_i \cdot z_k / \tau)}

    with :math:`P(i) = \{j \neq i : y_j = y_i\}`; anchors without a positive are skipped.
    The RGCNN paper's Eq. 3 prints the indicator as :math:`y_i \neq y_j` while its text
    (and Khosla et al.) take same-class pairs as positives; same-class is implemented.
    For RGCNN the 2N rows are the image and radiomics projections of N patients.
    """

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``embeddings`` (M, D), ``labels`` (M,) -> scalar loss."""
        z = F.normalize(embeddings, dim=1)
        logits = z @ z.T / self.temperature
        self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_mask, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        positive = (labels[:, None] == labels[None, :]) & ~self_mask
        counts = positive.sum(dim=1)
        anchors = counts > 0
        if not anchors.any():
            return embeddings.sum() * 0.0  # no pair to align: a zero that keeps the graph
        summed = log_prob.masked_fill(~positive, 0.0).sum(dim=1)
        return -(summed[anchors] / counts[anchors]).mean()


class NTXentLoss(nn.Module):
    r"""Normalised temperature-scaled cross-entropy (SimCLR) over two views of N images.

    .. math::
        \ell_{i} = -\log \frac{\exp(\mathrm{sim}(z_i, z_{i'}) / \tau)}
                              {\sum_{k \neq i} \exp(\mathrm{sim}(z_i, z_k) / \tau)}

    averaged over all 2N views, where :math:`i'` is the other view of the same image and
    :math:`\mathrm{sim}` the cosine similarity: :class:`SupConLoss` with image identity
    as the label.
    """

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        self.supcon = SupConLoss(temperature)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """Projections of the two views, each (N, D) with row i the same image -> scalar loss."""
        identity = torch.arange(len(view1), device=view1.device)
        return self.supcon(torch.cat([view1, view2]), torch.cat([identity, identity]))
