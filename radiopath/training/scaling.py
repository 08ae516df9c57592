r"""Node-feature standardisation fitted on the training patients of one fold.

Per modality, :math:`x' = (x - \mu) / \sigma` with :math:`\mu, \sigma` over all
nodes of the training patients; features with :math:`\sigma \approx 0` are only
centred. Applied batch by batch, so the cohort's graphs are never copied.
"""

from __future__ import annotations

import torch

from radiopath.models import PatientBatch
from radiopath.training.cohort import Patient


class NodeScaler:
    """scikit-learn-style ``fit`` / ``transform`` for the node features of each modality."""

    def __init__(self, eps: float = 1e-6):
        self.eps = eps
        self.mean_: dict[str, torch.Tensor] = {}
        self.scale_: dict[str, torch.Tensor] = {}

    def fit(self, patients: list[Patient]) -> "NodeScaler":
        """Node mean and standard deviation per modality over ``patients`` (the training part)."""
        modalities = sorted({m for p in patients for m in p.graphs})
        for modality in modalities:
            x = torch.cat([p.graphs[modality].x for p in patients if modality in p.graphs]).double()
            std = x.std(0, unbiased=False)
            self.mean_[modality] = x.mean(0).float()
            self.scale_[modality] = torch.where(std > self.eps, std, torch.ones_like(std)).float()
        return self

    def transform(self, batch: PatientBatch) -> PatientBatch:
        """Standardise the node features of a batch in place and return it."""
        for modality, graphs in batch.graphs.items():
            if modality not in self.mean_:
                raise ValueError(f"scaler was not fitted on any {modality} graph")
            graphs.x = (graphs.x - self.mean_[modality]) / self.scale_[modality]
        return batch

    def state_dict(self) -> dict:
        return {"mean": self.mean_, "scale": self.scale_}
