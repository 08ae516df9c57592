"""Building blocks shared by the ABMIL and SPARRA aggregators."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
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
    """A graph convolution by name: ``gcn`` (:class:`SparseGCNConv`), ``gin`` or ``gat`` (one head)."""
    if name == "gcn":
        return SparseGCNConv(in_dim, out_dim)
    if name == "gin":
        return GINConv(nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim)))
    if name == "gat":
        return GATConv(in_dim, out_dim, heads=1)
    raise ValueError(f"unknown graph convolution {name!r}; choose one of {CONVS}")


@dataclass
class GCNAdjacency:
    r"""The GCN propagation matrix :math:`\hat D^{-1/2} (A + I) \hat D^{-1/2}` of a graph (or a batch).

    ``matrix`` holds the edges (row = target node) as a sparse CSR tensor, ``transpose`` the
    same edges by source node (for the backward pass), ``loop`` the self-loop weights
    :math:`1 / \hat d_i`, kept apart so that no sorted merge of the diagonal is needed.
    """

    matrix: Tensor
    transpose: Tensor
    loop: Tensor

    def to(self, device) -> "GCNAdjacency":
        return GCNAdjacency(self.matrix.to(device), self.transpose.to(device), self.loop.to(device))


def block_diagonal(parts: list[GCNAdjacency]) -> GCNAdjacency:
    """The propagation matrix of a batch from those of its graphs, in order (a block-diagonal matrix)."""
    return GCNAdjacency(_block_csr([p.matrix for p in parts]), _block_csr([p.transpose for p in parts]),
                        torch.cat([p.loop for p in parts]))


def _block_csr(matrices: list[Tensor]) -> Tensor:
    crows, cols = [matrices[0].crow_indices()[:1]], []
    nodes = entries = 0
    for matrix in matrices:
        crows.append(matrix.crow_indices()[1:] + entries)
        cols.append(matrix.col_indices() + nodes)
        nodes, entries = nodes + matrix.size(0), entries + matrix.values().numel()
    return _sparse_csr(torch.cat(crows), torch.cat(cols), torch.cat([m.values() for m in matrices]), nodes)


def gcn_adjacency(edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None,
                  dtype: torch.dtype = torch.float32) -> GCNAdjacency | None:
    """The propagation matrix of ``GCNConv``'s default normalisation, or None if the graph has self-loops.

    Same weights as ``torch_geometric``'s ``gcn_norm`` (flow source -> target, a self-loop of
    weight 1 on every node); graphs that already have self-loops (PyG keeps their weights) are
    left to PyG.
    """
    row, col = edge_index[0], edge_index[1]
    if bool((row == col).any()):
        return None
    weight = torch.ones(row.numel(), dtype=dtype, device=row.device) if edge_weight is None else edge_weight
    degree = torch.ones(num_nodes, dtype=weight.dtype, device=row.device).index_add_(0, col, weight)
    inv_sqrt = degree.pow(-0.5)
    inv_sqrt.masked_fill_(torch.isinf(inv_sqrt), 0.0)
    norm = inv_sqrt[row] * weight * inv_sqrt[col]
    return GCNAdjacency(_csr(col, row, norm, num_nodes), _csr(row, col, norm, num_nodes), inv_sqrt * inv_sqrt)


def _csr(row: Tensor, col: Tensor, value: Tensor, n: int) -> Tensor:
    """Square CSR matrix from COO entries, sorting them by row only if they are not already."""
    if row.numel() > 1 and not bool((row[1:] >= row[:-1]).all()):
        order = torch.argsort(row, stable=True)
        row, col, value = row[order], col[order], value[order]
    crow = torch.zeros(n + 1, dtype=torch.long, device=row.device)
    crow[1:] = torch.bincount(row, minlength=n).cumsum(0)
    return _sparse_csr(crow, col, value, n)


def _sparse_csr(crow: Tensor, col: Tensor, value: Tensor, n: int) -> Tensor:
    with warnings.catch_warnings():  # torch says once per process that sparse CSR is "beta"
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, value, (n, n), check_invariants=False)


class _Propagate(torch.autograd.Function):
    """``matrix @ h + loop * h``; the backward multiplies by the stored transpose (no transposing per step)."""

    @staticmethod
    def forward(ctx, h: Tensor, adjacency: GCNAdjacency) -> Tensor:
        ctx.adjacency = adjacency
        return _product(adjacency.matrix, adjacency.loop, h)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _product(ctx.adjacency.transpose, ctx.adjacency.loop, grad), None


def _product(matrix: Tensor, loop: Tensor, h: Tensor) -> Tensor:
    h = h.contiguous()
    out = h.new_empty(h.shape)
    # beta=0 overwrites ``out``: no zero-filled output as ``matrix @ h`` would allocate.
    torch.addmm(out, matrix, h, beta=0, out=out)
    return out.addcmul_(loop.unsqueeze(1), h)


class SparseGCNConv(GCNConv):
    r"""``torch_geometric``'s ``GCNConv`` (same parameters, same output) propagating by one sparse product.

    PyG's message passing materialises one message per edge (E x F) in the forward pass and
    again in the backward pass; on CPU that costs several times a sparse CSR product. Here
    :math:`\hat A (X \Theta)` is one CSR matrix product, forward and backward. ``forward``
    also takes a precomputed :class:`GCNAdjacency` in place of ``edge_index`` (e.g.
    :attr:`PatientBatch.adjacency <radiopath.models.batch.PatientBatch>`): a fixed graph then
    is normalised once, not at every step.
    """

    def forward(self, x: Tensor, edge_index: Tensor | GCNAdjacency, edge_weight: Tensor | None = None) -> Tensor:
        adjacency = edge_index
        if not isinstance(adjacency, GCNAdjacency):
            if edge_index.layout != torch.strided:
                return super().forward(x, edge_index, edge_weight)
            adjacency = gcn_adjacency(edge_index, x.size(0), edge_weight, x.dtype)
            if adjacency is None:
                return super().forward(x, edge_index, edge_weight)
        out = _Propagate.apply(self.lin(x), adjacency)
        return out if self.bias is None else out.add_(self.bias)  # in place: the product saved nothing of out
