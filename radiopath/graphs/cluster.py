r"""Hybrid spatial/feature clustering of patches, with SlideGraph+ semantics, in sparse form.

Two patches :math:`i, j` are similar when they are close in space *and* in feature space:

.. math::
    s_{ij} = \exp(-\lambda_f \lVert x_i - x_j \rVert)\,\exp(-\lambda_d \lVert p_i - p_j \rVert)
    \quad\text{if } \lVert p_i - p_j \rVert < r, \qquad s_{ij} = 0 \text{ otherwise,}

and their distance is :math:`d_{ij} = 1 - s_{ij}`. Average linkage on :math:`d`, cut at
height :math:`\lambda_h`, gives the clusters (the reference implementation builds the
whole condensed distance matrix and calls ``scipy.cluster.hierarchy.linkage``).

Average linkage only needs the pairs inside the radius. For clusters :math:`A, B`,

.. math::
    D(A, B) = \frac{1}{|A||B|}\sum_{a \in A, b \in B} d_{ab}
            = 1 - \frac{S_{AB}}{|A||B|}, \qquad S_{AB} = \sum_{a \in A, b \in B} s_{ab},

because every pair outside the radius contributes exactly 1. ``S`` adds up when
clusters merge (:math:`S_{A\cup B, C} = S_{AC} + S_{BC}`), so the clustering runs on
the sparse graph of pairs within the radius: memory and time grow with the number
of such pairs, not with :math:`N^2`.

Merging order: average linkage is *reducible* (merging two clusters never brings
the result closer to a third cluster than the nearer of the two was), so merging
every pair of reciprocal nearest neighbours at once gives the same dendrogram as
merging one pair at a time. Each round below merges all reciprocal pairs whose
distance is at most :math:`\lambda_h`, then contracts the graph; a cluster whose
nearest neighbour is farther than :math:`\lambda_h` can never merge again and
leaves the graph. Ties are broken by the lowest edge index.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree


def neighbour_pairs(pos: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` with ``|p_i - p_j| < radius``, and their distances."""
    pairs = cKDTree(pos).query_pairs(radius, output_type="ndarray")
    if len(pairs) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    i, j = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    dist = np.linalg.norm(pos[i] - pos[j], axis=1)
    keep = dist < radius  # query_pairs is inclusive; the reference is strict
    return i[keep], j[keep], dist[keep]


def pair_feature_distances(features: np.ndarray, pos: np.ndarray, i: np.ndarray, j: np.ndarray,
                           cell: float) -> np.ndarray:
    r""":math:`\lVert x_i - x_j \rVert` for spatially close pairs, by blocked matrix products.

    Patches are bucketed into spatial cells of side ``cell`` (>= the pair radius), so
    both ends of a pair lie in neighbouring cells. For each cell the Gram matrix
    between its patches and those of its neighbourhood comes from one matrix product,
    and :math:`\lVert a-b\rVert^2 = \lVert a\rVert^2 + \lVert b\rVert^2 - 2a\cdot b` is
    read off it: much faster than gathering two feature rows per pair.
    """
    out = np.empty(len(i), dtype=np.float64)
    if len(i) == 0:
        return out
    feats = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    sq = (feats * feats).sum(1)
    cells = np.floor((pos - pos.min(0)) / cell).astype(np.int64)
    cell_id = np.ravel_multi_index(cells.T, cells.max(0) + 1)
    order = np.argsort(cell_id[i], kind="stable")
    row_cells, starts = np.unique(cell_id[i][order], return_index=True)
    bounds = np.append(starts, len(order))
    for k in range(len(row_cells)):
        block = order[bounds[k]:bounds[k + 1]]
        rows, row_local = np.unique(i[block], return_inverse=True)
        cols, col_local = np.unique(j[block], return_inverse=True)
        gram = feats[rows] @ feats[cols].T
        dots = gram[torch.from_numpy(row_local), torch.from_numpy(col_local)]
        sq_dist = sq[rows][row_local] + sq[cols][col_local] - 2 * dots
        out[block] = sq_dist.clamp_min(0).sqrt().double().numpy()
    return out


def hybrid_similarity(features: np.ndarray, pos: np.ndarray, radius: float, lambda_f: float,
                      lambda_d: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse similarity ``s_ij = f * d`` over all pairs within ``radius`` (``i < j``)."""
    i, j, spatial = neighbour_pairs(pos, radius)
    feature = pair_feature_distances(features, pos, i, j, cell=radius)
    return i, j, np.exp(-lambda_f * feature) * np.exp(-lambda_d * spatial)


def average_linkage_clusters(n: int, i: np.ndarray, j: np.ndarray, similarity: np.ndarray,
                             lambda_h: float) -> np.ndarray:
    """Flat average-linkage clusters (cut at distance ``lambda_h``) of a sparse similarity graph.

    ``similarity`` holds :math:`s_{ij} > 0` for the listed pairs; unlisted pairs have
    similarity 0 (distance 1). Returns one cluster label per item, numbered 0.. in
    order of each cluster's first item.
    """
    label = torch.arange(n)  # current cluster of every item
    size = torch.ones(n, dtype=torch.float64)
    u, v = torch.from_numpy(np.asarray(i, np.int64)), torch.from_numpy(np.asarray(j, np.int64))
    weight = torch.from_numpy(np.asarray(similarity, np.float64))
    u, v, weight = _coalesce(u, v, weight, n)
    min_link = 1.0 - lambda_h  # merge while S_AB / (|A||B|) >= 1 - lambda_h
    while len(u):
        link = weight / (size[u] * size[v])
        best = torch.full((n,), -1.0, dtype=torch.float64)
        best.scatter_reduce_(0, u, link, "amax").scatter_reduce_(0, v, link, "amax")
        edge_id = torch.arange(len(u))
        choice = torch.full((n,), len(u), dtype=torch.int64)
        at_u, at_v = link == best[u], link == best[v]
        choice.scatter_reduce_(0, u[at_u], edge_id[at_u], "amin")
        choice.scatter_reduce_(0, v[at_v], edge_id[at_v], "amin")
        merge = (choice[u] == edge_id) & (choice[v] == edge_id) & (link >= min_link)
        if not merge.any():
            break
        # Clusters whose best link is too weak can never merge again: drop their edges.
        alive = best >= min_link
        target = torch.arange(n)
        target[v[merge]] = u[merge]
        size.index_add_(0, u[merge], size[v[merge]])
        label = target[label]
        keep = alive[u] & alive[v] & ~merge
        u, v, weight = _coalesce(target[u[keep]], target[v[keep]], weight[keep], n)
    _, first = np.unique(label.numpy(), return_index=True)
    renumber = np.empty(n, dtype=np.int64)
    renumber[label.numpy()[np.sort(first)]] = np.arange(len(first))
    return renumber[label.numpy()]


def _coalesce(u: torch.Tensor, v: torch.Tensor, weight: torch.Tensor, n: int):
    """Order each edge as (low, high), drop self-loops, and sum parallel edges."""
    low, high = torch.minimum(u, v), torch.maximum(u, v)
    keep = low != high
    key = low[keep] * n + high[keep]
    unique, inverse = torch.unique(key, return_inverse=True)
    summed = torch.zeros(len(unique), dtype=weight.dtype).index_add_(0, inverse, weight[keep])
    return unique // n, unique % n, summed


def cluster_patches(features: np.ndarray, pos: np.ndarray, *, radius: float, lambda_f: float,
                    lambda_d: float, lambda_h: float) -> np.ndarray:
    """SlideGraph+-style hybrid clustering: one cluster label per patch."""
    i, j, similarity = hybrid_similarity(features, pos, radius, lambda_f, lambda_d)
    return average_linkage_clusters(len(features), i, j, similarity, lambda_h)
