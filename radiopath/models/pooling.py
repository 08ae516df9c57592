r"""Top-k graph pooling that keeps nodes of either sign and never shrinks a graph below k_min.

Gao & Ji (2019) score each node by a learned projection and keep the top
:math:`\lceil \rho n_g \rceil` nodes of each graph :math:`g`, gated by the score:

.. math::
    y_i = \frac{h_i^\top \mathbf w}{\lVert \mathbf w \rVert}, \qquad
    \text{score}_i = \begin{cases} |y_i| & \text{``abs''} \\ y_i & \text{``linear'' (as PyG's TopKPooling)} \end{cases}

.. math::
    k_g = \min\big(n_g,\ \max(\lceil \rho\, n_g \rceil,\ k_{min})\big), \qquad
    h'_i = h_i \tanh(\text{score}_i) \quad \text{for the } k_g \text{ best-scored nodes of } g

A prognostic region can stand out in either direction along :math:`\mathbf w` (a shift
that raises risk in one patient and lowers it in another); ``"abs"`` keeps both ends,
``"linear"`` only the positive one. ``"gated"`` replaces the projection by the magnitude of a
gated-attention score, :math:`|\mathbf u^\top(\tanh(V h_i) \odot \sigma(U h_i))|` (Ilse et
al., 2018; attention width half the feature width, at least 4), which can also keep both
ends and learns faster through its gate (the method-validation benchmark's choice). :math:`k_{min}` keeps small graphs from being reduced
to one node by two poolings. Edges between kept nodes are kept (PyG's ``filter_adj``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn.pool.connect.filter_edges import filter_adj

from radiopath.errors import check_choice, check_int, check_number
from radiopath.models.layers import GatedAttention

SCORES = ("abs", "linear", "gated")


class TopKNodePooling(nn.Module):
    """Keep the best-scored nodes of every graph of a batch (see the module docstring).

    Args:
        in_dim: node feature width.
        ratio: fraction of each graph's nodes to keep, in (0, 1].
        min_nodes: keep at least this many nodes of a graph (all of a smaller one).
        score: ``"abs"`` or ``"gated"`` (either sign) or ``"linear"``; with ``"gated"`` the
            projection ``weight`` is created but unused (the published benchmark's models were
            initialised with it, so the random streams stay as they were).
    """

    def __init__(self, in_dim: int, *, ratio: float, min_nodes: int, score: str):
        super().__init__()
        # A fraction, never a node count (PyG's TopKPooling reads a ratio >= 1 as one).
        check_number("ratio", ratio, "(0, 1]")
        check_int("min_nodes", min_nodes, minimum=1)
        check_choice("score", score, SCORES)
        self.ratio, self.min_nodes, self.score = ratio, min_nodes, score
        self.weight = nn.Parameter(torch.empty(in_dim))
        nn.init.uniform_(self.weight, -in_dim ** -0.5, in_dim ** -0.5)
        if score == "gated":
            self.gate = GatedAttention(in_dim, max(in_dim // 2, 4))

    def forward(self, h: Tensor, edge_index: Tensor, batch: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Pooled features, their edges, their graph index and ``perm`` (kept rows of ``h``)."""
        if self.score == "gated":
            score = self.gate(h).squeeze(-1).abs()
        else:
            # PyG's product and sum, so that the same weights give the same scores to the last bit
            y = (h * self.weight).sum(-1) / self.weight.norm(p=2)
            score = y.abs() if self.score == "abs" else y
        gate = score.tanh()
        # "linear" ranks the gated scores as PyG does: nodes whose tanh saturates tie, and keep PyG's order
        perm = self.select(gate if self.score == "linear" else score, batch)
        pooled = h[perm] * gate[perm].unsqueeze(-1)
        edge_index, _ = filter_adj(edge_index, None, perm, num_nodes=h.size(0))
        return pooled, edge_index, batch[perm], perm

    def select(self, score: Tensor, batch: Tensor) -> Tensor:
        """Indices of the kept nodes, grouped by graph, best first within a graph."""
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        sizes = torch.bincount(batch, minlength=num_graphs)
        keep = torch.clamp(torch.ceil(self.ratio * sizes).long(), min=self.min_nodes)
        keep = torch.minimum(keep, sizes)
        # Sort by score, then (stably) by graph: each graph's nodes in a run, best first.
        order = torch.sort(score.detach(), descending=True, stable=True).indices
        order = order[torch.sort(batch[order], stable=True).indices]
        starts = torch.cumsum(sizes, 0) - sizes
        rank = torch.arange(order.numel(), device=score.device) - starts[batch[order]]
        return order[rank < keep[batch[order]]]
