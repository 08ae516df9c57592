r"""Mean aggregation: the untrained baseline.

.. math::
    \mathbf{z}_b = \big[\, \tfrac{1}{|V_{b,m}|} \textstyle\sum_{i \in V_{b,m}} x_i \,\big]_{m}

per modality m the mean node feature of patient b's graph, modalities concatenated;
a patient without modality m gets a zero block (the training mean, since node
features are standardised on the training fold). No parameters, no risk (NaN).
"""

from __future__ import annotations

import torch
from torch_geometric.nn import global_mean_pool

from radiopath.models.base import Aggregator, concat_blocks, patient_block
from radiopath.models.batch import PatientBatch
from radiopath.models.output import AggregatorOutput
from radiopath.models.registry import AGGREGATORS


@AGGREGATORS.register("mean")
class MeanAggregator(Aggregator):
    """Per-modality mean of node features, concatenated."""

    trainable = False

    def __init__(self, in_dims: dict[str, int]):
        super().__init__(in_dims)
        self.out_dim = sum(self.in_dims.values())

    def forward(self, batch: PatientBatch) -> AggregatorOutput:
        blocks = {}
        for m in self.present(batch):
            g = batch.graphs[m]
            means = global_mean_pool(g.x, g.batch, size=g.num_graphs)
            blocks[m] = patient_block(means, g.patient, batch.num_patients)
        vector = concat_blocks(blocks, self.in_dims, batch.num_patients)
        risk = torch.full((batch.num_patients,), float("nan"), dtype=vector.dtype, device=vector.device)
        return AggregatorOutput(risk=risk, vector=vector)
