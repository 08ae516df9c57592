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
leaves the graph. Ties are broken by a fixed pseudo-random total order of the
pairs: a cluster whose best link is tied picks, among the tied pairs, the one whose
key :math:`a \cdot n + b` (:math:`a < b` the pair's cluster ids, each the lowest item
index in its cluster) has the smallest 64-bit hash (the splitmix64 finalizer, a
bijection, so no two pairs share a value). The order is deterministic but not
aligned with the item order, so exact ties (identical features on a regular grid)
still give many reciprocal pairs per round.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree


def _index_dtype(n: int) -> np.dtype:
    """int32 item indices where they fit (half the memory of int64), int64 otherwise."""
    return np.dtype(np.int32) if n < 2**31 else np.dtype(np.int64)


def neighbour_pairs(pos: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` with ``|p_i - p_j| < radius``, and their distances (float64).

    The pairs are listed once each; ``i`` and ``j`` are int32 when the number of
    points allows it, int64 otherwise.
    """
    pos = np.asarray(pos, dtype=np.float64)
    index = _index_dtype(len(pos))
    pairs = cKDTree(pos).query_pairs(radius, output_type="ndarray")
    i, j = pairs[:, 0].astype(index), pairs[:, 1].astype(index)
    del pairs
    if len(i) == 0:
        return i, j, np.zeros(0)
    dist = None
    for axis in range(pos.shape[1]):  # one coordinate at a time: no (pairs, dims) temporaries
        column = np.ascontiguousarray(pos[:, axis])
        delta = column[i]
        delta -= column[j]
        dist = np.abs(delta, out=delta) if dist is None else np.hypot(dist, delta, out=dist)
        del delta
    keep = dist < radius  # query_pairs is inclusive; the reference is strict
    if not keep.all():
        i, j, dist = i[keep], j[keep], dist[keep]
    return i, j, dist


def pair_feature_distances(features: np.ndarray, pos: np.ndarray, i: np.ndarray, j: np.ndarray,
                           cell: float, batch_elements: int = 2**24) -> np.ndarray:
    r""":math:`\lVert x_i - x_j \rVert` for spatially close pairs, by blocked matrix products.

    Patches are bucketed into spatial cells of side ``cell`` (>= the pair radius), so
    both ends of a pair lie in neighbouring cells. For each cell the Gram matrix
    between its patches and those of its neighbourhood comes from a matrix product,
    and :math:`\lVert a-b\rVert^2 = \lVert a\rVert^2 + \lVert b\rVert^2 - 2a\cdot b` is
    read off it: much faster than gathering two feature rows per pair. Cells go
    through one batched product (``torch.bmm``, padded to the batch's largest cell)
    as many at a time as keep the gathered rows under ``batch_elements`` numbers:
    a few hundred large parallel operations instead of thousands of small ones,
    which matters when the cores are shared.
    """
    out = np.empty(len(i), dtype=np.float64)
    if len(i) == 0:
        return out
    features = np.ascontiguousarray(features, dtype=np.float32)
    feats = torch.from_numpy(features)
    dim = features.shape[1]
    sq = (feats * feats).sum(1)
    cells = np.floor((pos - pos.min(0)) / cell).astype(np.int64)
    cell_id = np.ravel_multi_index(cells.T, cells.max(0) + 1)
    row_cell = cell_id.astype(_index_dtype(cell_id.max() + 1))[i]
    order = np.argsort(row_cell, kind="stable")
    row_cell = row_cell[order]
    change = row_cell[1:] != row_cell[:-1]
    del row_cell
    bounds = np.concatenate([[0], np.flatnonzero(change) + 1, [len(order)]])
    del change

    def flush(batch):
        """One padded batched product for the cells in ``batch``: (pairs, rows, row_local, cols, col_local)."""
        n_rows = max(len(b[1]) for b in batch)
        n_cols = max(len(b[3]) for b in batch)
        row_index = np.zeros((len(batch), n_rows), dtype=np.int64)  # padding: row 0, never read
        col_index = np.zeros((len(batch), n_cols), dtype=np.int64)
        flat = []
        for k, (_, rows, row_local, cols, col_local) in enumerate(batch):
            row_index[k, :len(rows)] = rows
            col_index[k, :len(cols)] = cols
            flat.append((k * n_rows + row_local) * n_cols + col_local)
        gram = torch.bmm(feats[torch.from_numpy(row_index)], feats[torch.from_numpy(col_index)].transpose(1, 2))
        dots = gram.view(-1)[torch.from_numpy(np.concatenate(flat))]
        pairs = np.concatenate([b[0] for b in batch])
        sq_dist = sq[torch.from_numpy(i[pairs])] + sq[torch.from_numpy(j[pairs])] - 2 * dots
        out[pairs] = sq_dist.clamp_min(0).sqrt().double().numpy()

    batch, batch_rows, batch_cols = [], 0, 0
    for k in range(len(bounds) - 1):
        block = order[bounds[k]:bounds[k + 1]]
        rows, row_local = np.unique(i[block], return_inverse=True)
        cols, col_local = np.unique(j[block], return_inverse=True)
        grown_rows, grown_cols = max(batch_rows, len(rows)), max(batch_cols, len(cols))
        if batch and (len(batch) + 1) * (grown_rows + grown_cols) * dim > batch_elements:
            flush(batch)
            batch, grown_rows, grown_cols = [], len(rows), len(cols)
        batch.append((block, rows, row_local, cols, col_local))
        batch_rows, batch_cols = grown_rows, grown_cols
    flush(batch)
    return out


def hybrid_similarity(features: np.ndarray, pos: np.ndarray, radius: float, lambda_f: float,
                      lambda_d: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse similarity ``s_ij = f * d`` over all pairs within ``radius`` (``i < j``, each once)."""
    i, j, spatial = neighbour_pairs(pos, radius)
    similarity = pair_feature_distances(features, pos, i, j, cell=radius)
    # f = exp(-lambda_f |dx|), d = exp(-lambda_d |dp|), s = f * d, all in place
    similarity *= -lambda_f
    np.exp(similarity, out=similarity)
    spatial *= -lambda_d
    np.exp(spatial, out=spatial)
    similarity *= spatial
    return i, j, similarity


def average_linkage_clusters(n: int, i: np.ndarray, j: np.ndarray, similarity: np.ndarray,
                             lambda_h: float) -> np.ndarray:
    """Flat average-linkage clusters (cut at distance ``lambda_h``) of a sparse similarity graph.

    ``similarity`` holds :math:`s_{ij} > 0` for the listed pairs (either orientation;
    a pair listed twice counts with the sum); unlisted pairs have similarity 0
    (distance 1). Returns one cluster label per item, numbered 0.. in order of each
    cluster's first item.
    """
    index = torch.int32 if _index_dtype(n) == np.int32 else torch.int64
    edges = [torch.as_tensor(np.asarray(i)).to(index), torch.as_tensor(np.asarray(j)).to(index),
             torch.as_tensor(np.asarray(similarity, dtype=np.float64))]
    return _merge_rounds(n, list(_coalesce(edges, n)), lambda_h)


def cluster_patches(features: np.ndarray, pos: np.ndarray, *, radius: float, lambda_f: float,
                    lambda_d: float, lambda_h: float) -> np.ndarray:
    """SlideGraph+-style hybrid clustering: one cluster label per patch."""
    # hybrid_similarity lists every pair once with i < j, as _merge_rounds needs, so no
    # coalescing; the list hands the only references over, so the pair arrays are freed
    # as soon as the first merge round has contracted them.
    edges = [torch.from_numpy(a) for a in hybrid_similarity(features, pos, radius, lambda_f, lambda_d)]
    return _merge_rounds(len(features), edges, lambda_h)


def _merge_rounds(n: int, edges: list, lambda_h: float) -> np.ndarray:
    """The merge rounds of the module docstring on ``edges = [u, v, weight]``.

    Each pair is listed once, with ``u < v``; ``u, v`` are int32 or int64 tensors,
    ``weight`` float64 (the summed similarity S). The list is emptied, so that this
    function holds the only references and frees the arrays round by round.
    """
    u, v, weight = edges
    edges.clear()
    label = torch.arange(n, dtype=u.dtype)  # current cluster of every item
    size = torch.ones(n, dtype=torch.float64)
    min_link = 1.0 - lambda_h  # merge while S_AB / (|A||B|) >= 1 - lambda_h
    while len(u):
        link = size[u]
        link *= size[v]
        torch.div(weight, link, out=link)  # S_AB / (|A||B|)
        best = torch.full((n,), -1.0, dtype=torch.float64)
        best.scatter_reduce_(0, u, link, "amax").scatter_reduce_(0, v, link, "amax")
        # Each cluster chooses, among its pairs with the best link, the one first in the
        # hash order; a pair chosen by both its ends is a reciprocal pair.
        rank = _pair_hash(u, v, n)
        choice = torch.full((n,), torch.iinfo(torch.int64).max, dtype=torch.int64)
        for end in (u, v):
            at = link == best[end]
            choice.scatter_reduce_(0, end[at], rank[at], "amin")
            del at
        del end  # else it would keep v alive through the contraction below
        merge = choice[u] == rank
        merge &= choice[v] == rank
        merge &= link >= min_link
        del rank, choice, link
        if not merge.any():
            break
        # Clusters whose best link is too weak can never merge again: drop their edges.
        alive = best >= min_link
        del best
        into, absorbed = u[merge], v[merge]
        target = torch.arange(n, dtype=u.dtype)
        target[absorbed] = into
        size.index_add_(0, into, size[absorbed])
        label = target[label]
        keep = alive[u]
        keep &= alive[v]
        keep &= ~merge
        del alive, merge, into, absorbed
        contracted = [target[u[keep]], target[v[keep]], weight[keep]]
        del u, v, weight, keep, target
        u, v, weight = _coalesce(contracted, n)
    label = label.numpy()
    _, first = np.unique(label, return_index=True)
    renumber = np.empty(n, dtype=np.int64)
    renumber[label[np.sort(first)]] = np.arange(len(first))
    return renumber[label]


def _coalesce(edges: list, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Order each edge as (low, high), drop self-loops, and sum parallel edges.

    ``edges = [u, v, weight]`` is emptied so that each input is freed as soon as it is
    used. Returns the distinct pairs sorted by ``low * n + high``, indices in ``u``'s dtype.
    """
    u, v, weight = edges
    edges.clear()
    index = u.dtype
    loops = u == v
    key = torch.minimum(u, v).to(torch.int64)
    key *= n
    key += torch.maximum(u, v)
    del u, v
    if loops.any():
        key, weight = key[~loops], weight[~loops]
    del loops
    order = torch.from_numpy(np.argsort(key.numpy()))  # one int64 permutation, no sort copies
    key = key[order]
    weight = weight[order]
    del order
    first = torch.ones(len(key), dtype=torch.bool)
    torch.ne(key[1:], key[:-1], out=first[1:])
    group = torch.cumsum(first, 0)
    group -= 1
    unique = key[first]
    del key, first
    summed = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, group, weight)
    del group, weight
    return (unique // n).to(index), (unique % n).to(index), summed


_SPLITMIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
_TOP_BIT = np.uint64(1 << 63)


def _pair_hash(u: torch.Tensor, v: torch.Tensor, n: int) -> torch.Tensor:
    """splitmix64 finalizer of ``u * n + v`` as int64 ordered like the unsigned hash.

    Each step (xor with a right shift, multiplication by an odd constant modulo 2**64)
    is a bijection of 64-bit integers, so distinct pairs get distinct values.
    """
    key = u.to(torch.int64, copy=True)
    key *= n
    key += v
    x = key.numpy().view(np.uint64)  # numpy: unsigned arithmetic wraps modulo 2**64 by definition
    shifted = x >> np.uint64(30)
    x ^= shifted
    x *= _SPLITMIX[0]
    np.right_shift(x, np.uint64(27), out=shifted)
    x ^= shifted
    x *= _SPLITMIX[1]
    np.right_shift(x, np.uint64(31), out=shifted)
    x ^= shifted
    x ^= _TOP_BIT  # signed comparison of the result = unsigned comparison of the hash
    return key
