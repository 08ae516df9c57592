"""A mini-batch of patients: one ``torch_geometric`` ``Batch`` per modality.

A patient may lack a modality, so each modality batches only the patients that
have it; every graph carries ``patient``, its row in ``0..num_patients-1``, which
is how aggregators put per-graph results back into per-patient tensors.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch_geometric.data import Batch, Data


@dataclass
class PatientBatch:
    """Per-modality graph batches of ``num_patients`` patients."""

    graphs: dict[str, Batch]
    num_patients: int

    def to(self, device) -> "PatientBatch":
        """The same batch with every graph on ``device``."""
        return PatientBatch({m: g.to(device) for m, g in self.graphs.items()}, self.num_patients)


def collate_patients(patients: list[dict[str, Data]]) -> PatientBatch:
    """Batch patients given as ``modality -> Data`` maps (only the modalities each has).

    The input graphs are not modified: each is shallow-copied before ``patient``
    is attached, so tensors are shared, not duplicated.
    """
    per_modality: dict[str, list[Data]] = {}
    for row, graphs in enumerate(patients):
        for modality, graph in graphs.items():
            graph = copy.copy(graph)
            graph.patient = torch.tensor([row], dtype=torch.long)
            per_modality.setdefault(modality, []).append(graph)
    return PatientBatch(
        {m: Batch.from_data_list(gs) for m, gs in per_modality.items()}, len(patients)
    )
