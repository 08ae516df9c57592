"""One case's patch features -> one graph (nodes = clusters, edges between near nodes)."""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data

from radiopath.encoders.features import PatchFeatures
from radiopath.graphs.cluster import cluster_patches
from radiopath.graphs.edges import delaunay_edges, knn_edges, radius_edges


def patch_positions(patches: PatchFeatures) -> np.ndarray:
    """Patch centres in physical units (float64): µm for slides, mm for CT."""
    if patches.modality == "pathology":
        return (patches.coords.astype(np.float64) + patches.patch_size / 2) * patches.level0_mpp
    return patches.coords.astype(np.float64)


def build_graph(
    patches: PatchFeatures,
    *,
    radius: float,
    lambda_f: float,
    lambda_d: float,
    lambda_h: float,
    edges: str = "delaunay",
    connectivity: float,
    k: int = 8,
) -> Data:
    """Cluster the patches (see :mod:`radiopath.graphs.cluster`) and connect the clusters.

    ``radius``, ``connectivity`` and ``1/lambda_d`` are in the physical units of
    :func:`patch_positions`. ``edges`` is ``delaunay`` (triangulation minus edges
    longer than ``connectivity``), ``radius`` (all nodes within ``connectivity``)
    or ``knn`` (``k`` nearest nodes).
    """
    pos = patch_positions(patches)
    labels = cluster_patches(
        patches.features, pos, radius=radius, lambda_f=lambda_f, lambda_d=lambda_d, lambda_h=lambda_h
    )
    node_x = _cluster_means(patches.features, labels)
    node_pos = _cluster_means(pos, labels)

    if edges == "delaunay":
        edge_index = delaunay_edges(node_pos, connectivity)
    elif edges == "radius":
        edge_index = radius_edges(node_pos, connectivity)
    elif edges == "knn":
        edge_index = knn_edges(node_pos, k)
    else:
        raise ValueError(f"edges must be delaunay, radius or knn, got {edges!r}")

    return Data(
        x=torch.from_numpy(node_x.astype(np.float32)),
        edge_index=torch.from_numpy(edge_index),
        pos=torch.from_numpy(node_pos.astype(np.float32)),
        assignment=torch.from_numpy(labels.astype(np.int64)),
        case_id=patches.case_id,
        modality=patches.modality,
        encoder=patches.encoder,
        num_nodes=len(node_x),
    )


def _cluster_means(values: np.ndarray, labels: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """Row means of ``values`` per cluster label, summed in float64 (exact positions).

    Rows are converted to float64 ``chunk`` at a time, so a large float32 feature
    matrix never gets a whole float64 copy.
    """
    labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    n = int(labels.max()) + 1
    sums = torch.zeros(n, values.shape[1], dtype=torch.float64)
    for start in range(0, len(values), chunk):
        rows = torch.from_numpy(np.asarray(values[start:start + chunk], dtype=np.float64))
        sums.index_add_(0, labels[start:start + chunk], rows)
    sums /= torch.bincount(labels, minlength=n).unsqueeze(1)
    return sums.numpy()
