"""What every aggregator returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class AggregatorOutput:
    """One forward pass over a :class:`~radiopath.models.batch.PatientBatch` of B patients.

    - ``risk`` (B,): log-risk; NaN where the aggregator has no risk head (Mean).
    - ``vector`` (B, out_dim): patient vectors, modality blocks concatenated in
      ``Aggregator.modalities`` order; a patient without modality m has a zero block.
    - ``loss_terms``: extra loss terms, already weighted, for the trainer to add to
      the Cox loss.
    - ``node_importance``: per modality, one detached value per node of
      ``batch.graphs[m].x``.
    """

    risk: Tensor
    vector: Tensor
    loss_terms: dict[str, Tensor] = field(default_factory=dict)
    node_importance: dict[str, Tensor] = field(default_factory=dict)
