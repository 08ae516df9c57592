r"""Attention-based multiple-instance learning (ABMIL, Ilse et al., 2018), per modality.

For each modality m and patient b with nodes :math:`V_{b,m}`:

.. math::
    h_i &= \mathrm{Dropout}(\mathrm{ReLU}(\mathbf{W}_m x_i + \mathbf{c}_m)) \\
    a_i &= \mathbf{w}_m^\top \big( \tanh(\mathbf{V}_m h_i) \odot
           \mathrm{sigmoid}(\mathbf{U}_m h_i) \big) \\
    \alpha_i &= \frac{\exp a_i}{\sum_{j \in V_{b,m}} \exp a_j}, \qquad
    \mathbf{z}_{b,m} = \sum_{i \in V_{b,m}} \alpha_i h_i

The patient vector concatenates :math:`\mathbf{z}_{b,m}` over modalities, with a zero
block for a modality the patient lacks, and a linear layer gives the log-risk
:math:`\mathbf{\theta}^\top \mathbf{z}_b`.
Node importance is :math:`\alpha_i`, which sums to one per patient and modality.
"""

from __future__ import annotations

from torch import nn
from torch_geometric.nn import global_add_pool
from torch_geometric.utils import softmax

from radiopath.errors import check_int, check_number
from radiopath.models.base import Aggregator, concat_blocks, patient_block
from radiopath.models.batch import PatientBatch
from radiopath.models.layers import GatedAttention, feature_encoder
from radiopath.models.output import AggregatorOutput
from radiopath.models.registry import AGGREGATORS


@AGGREGATORS.register("abmil")
class ABMILAggregator(Aggregator):
    """Gated-attention MIL per modality, concatenated, with a linear Cox head.

    Settings are keyword-only, without defaults: ``conf/model/abmil.yaml`` holds them.

    Args:
        in_dims: modality -> node-feature width (key order = block order).
        hidden: encoder width, the width of each modality block.
        attention_dim: width of the tanh and sigmoid attention branches.
        dropout: dropout after the encoder (0.5 in the paper, section 3.1).
    """

    def __init__(self, in_dims: dict[str, int], *, hidden: int, attention_dim: int, dropout: float):
        super().__init__(in_dims)
        check_int("hidden", hidden, minimum=1)
        check_int("attention_dim", attention_dim, minimum=1)
        check_number("dropout", dropout, "[0, 1)")
        self.encoders = nn.ModuleDict({m: feature_encoder(d, hidden, dropout) for m, d in self.in_dims.items()})
        self.attention = nn.ModuleDict({m: GatedAttention(hidden, attention_dim) for m in self.modalities})
        self.widths = {m: hidden for m in self.modalities}
        self.out_dim = hidden * len(self.modalities)
        # No bias: the Cox partial likelihood is blind to a shift of all risks.
        self.head = nn.Linear(self.out_dim, 1, bias=False)

    def forward(self, batch: PatientBatch) -> AggregatorOutput:
        blocks, importance = {}, {}
        for m in self.present(batch):
            g = batch.graphs[m]
            h = self.encoders[m](g.x)
            alpha = softmax(self.attention[m](h).squeeze(-1), g.batch, num_nodes=h.size(0))
            pooled = global_add_pool(alpha.unsqueeze(-1) * h, g.batch, size=g.num_graphs)
            blocks[m] = patient_block(pooled, g.patient, batch.num_patients)
            importance[m] = alpha.detach()
        vector = concat_blocks(blocks, self.widths, batch.num_patients)
        return AggregatorOutput(risk=self.head(vector).squeeze(-1), vector=vector,
                                node_importance=importance)
