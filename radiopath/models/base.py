"""The aggregator base class: patient graphs in, patient vectors and risks out."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from radiopath.models.batch import PatientBatch
from radiopath.models.output import AggregatorOutput


class Aggregator(nn.Module):
    """Base of every aggregator.

    ``in_dims`` maps each modality the model uses to its node-feature width; its
    key order is ``modalities``, the order of the blocks of the patient vector.
    Subclasses set ``out_dim`` and implement ``forward``.
    """

    trainable: bool = True

    def __init__(self, in_dims: dict[str, int]):
        super().__init__()
        if not in_dims:
            raise ValueError("an aggregator needs at least one modality in in_dims")
        self.in_dims = dict(in_dims)
        self.modalities = list(in_dims)
        self.out_dim = 0

    def forward(self, batch: PatientBatch) -> AggregatorOutput:
        raise NotImplementedError

    def present(self, batch: PatientBatch) -> list[str]:
        """The model's modalities that ``batch`` has graphs of, in ``modalities`` order."""
        present = [m for m in self.modalities if m in batch.graphs]
        if not present:
            raise ValueError(f"the batch holds no graph of {self.modalities}")
        return present


def patient_block(per_graph: Tensor, patient: Tensor, num_patients: int) -> Tensor:
    """Scatter per-graph rows to patient rows; patients without the graph get zeros.

    Each aggregator's docstring says what a zero block means for it (for Mean, the
    training mean of the standardised node features).
    """
    block = per_graph.new_zeros((num_patients, per_graph.size(1)))
    return block.index_copy(0, patient, per_graph)


def concat_blocks(blocks: dict[str, Tensor], widths: dict[str, int], num_patients: int) -> Tensor:
    """Concatenate per-modality patient blocks in ``widths`` key order (zeros where absent)."""
    ref = next(iter(blocks.values()))
    return torch.cat(
        [blocks[m] if m in blocks else ref.new_zeros((num_patients, w)) for m, w in widths.items()],
        dim=1,
    )
