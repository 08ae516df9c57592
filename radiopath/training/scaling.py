r"""Node-feature standardisation fitted on the training patients of one fold.

Per modality, :math:`x' = (x - \mu) / \sigma` with :math:`\mu, \sigma` over all
nodes of the training patients; features with :math:`\sigma \approx 0` are only
centred. Applied graph by graph while a batch is collated, writing into the batch's
own node-feature storage, so the cohort's graphs are never copied or modified.
"""

from __future__ import annotations

import torch
from torch import Tensor

from radiopath.training.cohort import Patient


class NodeScaler:
    """scikit-learn-style ``fit`` / ``transform`` for the node features of each modality."""

    def __init__(self, eps: float = 1e-6):
        self.eps = eps
        self.mean_: dict[str, torch.Tensor] = {}
        self.scale_: dict[str, torch.Tensor] = {}

    def fit(self, patients: list[Patient]) -> "NodeScaler":
        """Node mean and standard deviation per modality over ``patients`` (the training part).

        Two passes in float64, one graph at a time: the training nodes of a large cohort are
        never concatenated (GBs in float32, twice that in float64).
        """
        modalities = sorted({m for p in patients for m in p.graphs})
        for modality in modalities:
            xs = [p.graphs[modality].x for p in patients if modality in p.graphs]
            count = sum(x.size(0) for x in xs)
            mean = sum(x.sum(0, dtype=torch.float64) for x in xs) / count
            var = sum((x.double() - mean).pow_(2).sum(0) for x in xs) / count
            std = var.sqrt()
            self.mean_[modality] = mean.float()
            self.scale_[modality] = torch.where(std > self.eps, std, torch.ones_like(std)).float()
        return self

    def transform(self, modality: str, x: Tensor, out: Tensor | None = None) -> Tensor:
        """Standardised node features of one ``modality`` graph, written into ``out`` if given."""
        if modality not in self.mean_:
            raise ValueError(f"scaler was not fitted on any {modality} graph")
        out = torch.sub(x, self.mean_[modality], out=out)
        return out.div_(self.scale_[modality])

    def state_dict(self) -> dict:
        return {"mean": self.mean_, "scale": self.scale_}
