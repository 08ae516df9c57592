"""Edges between graph nodes: Delaunay triangulation (2-D or 3-D) or radius / k-NN.

All builders return a symmetric ``edge_index`` (int64, 2 x E, both directions, no
self-loops, sorted) so that every graph in radiopath has the same orientation.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.spatial import Delaunay, QhullError, cKDTree

log = logging.getLogger(__name__)


def delaunay_edges(pos: np.ndarray, max_length: float) -> np.ndarray:
    """Edges of the Delaunay triangulation of ``pos`` no longer than ``max_length``.

    Works in 2-D and 3-D. Fewer than ``dim + 2`` points or a degenerate layout
    (all points on a line or a plane) has no proper triangulation; those graphs
    fall back to :func:`radius_edges` with the same ``max_length``.
    """
    n, dim = pos.shape
    if n < dim + 2:
        return radius_edges(pos, max_length)
    try:
        simplices = Delaunay(pos).simplices
    except QhullError:
        log.info("degenerate node layout (%d nodes): radius edges instead of Delaunay", n)
        return radius_edges(pos, max_length)
    corners = simplices.shape[1]
    a, b = np.triu_indices(corners, k=1)
    pairs = np.concatenate([simplices[:, [p, q]] for p, q in zip(a, b)])
    length = np.linalg.norm(pos[pairs[:, 0]] - pos[pairs[:, 1]], axis=1)
    return _symmetric(pairs[length <= max_length], n)


def radius_edges(pos: np.ndarray, radius: float) -> np.ndarray:
    """Every pair of nodes at most ``radius`` apart."""
    pairs = cKDTree(pos).query_pairs(radius, output_type="ndarray")
    return _symmetric(pairs.reshape(-1, 2), len(pos))


def knn_edges(pos: np.ndarray, k: int) -> np.ndarray:
    """Each node to its ``k`` nearest neighbours (made symmetric)."""
    k = min(k, len(pos) - 1)
    if k < 1:
        return np.zeros((2, 0), dtype=np.int64)
    _, neighbours = cKDTree(pos).query(pos, k=k + 1)
    pairs = np.stack([np.repeat(np.arange(len(pos)), k), neighbours[:, 1:].ravel()], axis=1)
    return _symmetric(pairs, len(pos))


def _symmetric(pairs: np.ndarray, n: int) -> np.ndarray:
    """Unique undirected pairs -> sorted edge_index holding both directions."""
    pairs = pairs.astype(np.int64)
    both = np.concatenate([pairs, pairs[:, ::-1]])
    both = both[both[:, 0] != both[:, 1]]
    keys = np.unique(both[:, 0] * n + both[:, 1])
    return np.stack([keys // n, keys % n]).astype(np.int64)


EDGE_BUILDERS = {"delaunay": delaunay_edges, "radius": radius_edges, "knn": knn_edges}
