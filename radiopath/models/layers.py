"""Building blocks shared by the ABMIL and SPARRA aggregators."""

from __future__ import annotations

from torch import Tensor, nn
from torch_geometric.nn import GATConv, GCNConv, GINConv


def feature_encoder(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """Per-modality encoder branch: linear -> ReLU -> dropout."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))


class GatedAttention(nn.Module):
    r"""Gated attention scores (Ilse et al., 2018), before any softmax.

    .. math::
        a_i = \mathbf{w}^\top \left( \tanh(\mathbf{V} h_i) \odot
              \mathrm{sigmoid}(\mathbf{U} h_i) \right) \in \mathbb{R}^{\text{out\_dim}}
    """

    def __init__(self, in_dim: int, attention_dim: int, out_dim: int = 1):
        super().__init__()
        self.tanh_branch = nn.Linear(in_dim, attention_dim)
        self.sigmoid_branch = nn.Linear(in_dim, attention_dim)
        self.score = nn.Linear(attention_dim, out_dim)

    def forward(self, h: Tensor) -> Tensor:
        """Scores (N, out_dim) of the rows of ``h`` (N, in_dim)."""
        return self.score(self.tanh_branch(h).tanh() * self.sigmoid_branch(h).sigmoid())


CONVS = ("gcn", "gin", "gat")


def graph_conv(name: str, in_dim: int, out_dim: int) -> nn.Module:
    """A PyTorch Geometric graph convolution by name: ``gcn``, ``gin`` or ``gat`` (one head)."""
    if name == "gcn":
        return GCNConv(in_dim, out_dim)
    if name == "gin":
        return GINConv(nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim)))
    if name == "gat":
        return GATConv(in_dim, out_dim, heads=1)
    raise ValueError(f"unknown graph convolution {name!r}; choose one of {CONVS}")
