"""One case's patch features -> one graph (nodes = clusters, edges between near nodes).

A patient with several slides: each slide is clustered and connected on its own
(:func:`build_graph`), and the patient's graph is their disjoint union
(:func:`join_slide_graphs`): no edge joins two slides, and the aggregators, which pool
over a patient's graph, pool over every slide of the patient.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data

from radiopath.encoders.features import PatchFeatures
from radiopath.graphs.cluster import cluster_patches
from radiopath.graphs.edges import EDGE_BUILDERS
from radiopath.modality import modality


def construction_params(*, radius: float, lambda_f: float, lambda_d: float, lambda_h: float, edges: str,
                        connectivity: float, k: int) -> dict:
    """The settings that shape a graph, as its file records them (``graph.build_params``).

    Plain numbers and strings, so the file still loads with ``weights_only=True`` and
    ``radius=1`` and ``radius=1.0`` compare equal. ``connectivity`` shapes Delaunay and
    radius edges, ``k`` only k-NN edges; the one that did not shape the graph is None,
    so two graphs that differ only in an unused setting count as built alike.
    """
    if edges not in EDGE_BUILDERS:
        raise ValueError(f"edges must be {', '.join(EDGE_BUILDERS)}, got {edges!r}")
    return {
        "radius": float(radius),
        "lambda_f": float(lambda_f),
        "lambda_d": float(lambda_d),
        "lambda_h": float(lambda_h),
        "edges": str(edges),
        "connectivity": None if edges == "knn" else float(connectivity),
        "k": int(k) if edges == "knn" else None,
    }


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

    ``radius``, ``connectivity`` and ``1/lambda_d`` are in the modality's physical
    units (:meth:`radiopath.modality.Modality.physical_positions`). ``edges`` is
    ``delaunay`` (triangulation minus edges longer than ``connectivity``), ``radius``
    (all nodes within ``connectivity``) or ``knn`` (``k`` nearest nodes). The graph
    records these settings (:func:`construction_params`).
    """
    params = construction_params(radius=radius, lambda_f=lambda_f, lambda_d=lambda_d, lambda_h=lambda_h,
                                 edges=edges, connectivity=connectivity, k=k)
    pos = modality(patches.modality).physical_positions(patches.coords, patches.patch_size, patches.level0_mpp)
    labels = cluster_patches(
        patches.features, pos, radius=radius, lambda_f=lambda_f, lambda_d=lambda_d, lambda_h=lambda_h
    )
    node_x = _cluster_means(patches.features, labels)
    node_pos = _cluster_means(pos, labels)
    # k-NN edges take the neighbour count, Delaunay and radius edges the longest edge
    edge_index = EDGE_BUILDERS[edges](node_pos, k if edges == "knn" else connectivity)

    return Data(
        x=torch.from_numpy(node_x.astype(np.float32)),
        edge_index=torch.from_numpy(edge_index),
        pos=torch.from_numpy(node_pos.astype(np.float32)),
        assignment=torch.from_numpy(labels.astype(np.int64)),
        case_id=patches.case_id,
        modality=patches.modality,
        encoder=patches.encoder,
        build_params=params,
        num_nodes=len(node_x),
    )


def build_case_graph(parts: list[PatchFeatures], *, names: list[str], **params) -> Data:
    """The case's graph from its images' patch features (one per slide, ``names`` theirs).

    One image: :func:`build_graph`'s graph. Several slides: their graphs joined
    (:func:`join_slide_graphs`). ``params`` are :func:`build_graph`'s settings.
    """
    if len(parts) != len(names):
        raise ValueError(f"{len(parts)} patch-feature sets for {len(names)} slide names")
    graphs = [build_graph(part, **params) for part in parts]
    return graphs[0] if len(graphs) == 1 else join_slide_graphs(graphs, names=names)


def join_slide_graphs(graphs: list[Data], *, names: list[str]) -> Data:
    """The disjoint union of one patient's slide graphs, which must share case, encoder and settings.

    Nodes, edges and the patches' ``assignment`` are concatenated in slide order (node and
    patch indices offset), and the union gains ``slide`` (the slide index of every node),
    ``slide_names`` and ``slide_patches`` (each slide's number of patches, to split
    ``assignment`` back into the slides' feature files).
    """
    first = graphs[0]
    offsets = np.cumsum([0] + [g.num_nodes for g in graphs])
    return Data(
        x=torch.cat([g.x for g in graphs]),
        edge_index=torch.cat([g.edge_index + int(offset) for g, offset in zip(graphs, offsets)], dim=1),
        pos=torch.cat([g.pos for g in graphs]),
        assignment=torch.cat([g.assignment + int(offset) for g, offset in zip(graphs, offsets)]),
        slide=torch.cat([torch.full((g.num_nodes,), k, dtype=torch.long) for k, g in enumerate(graphs)]),
        slide_names=list(names),
        slide_patches=torch.tensor([len(g.assignment) for g in graphs], dtype=torch.long),
        case_id=first.case_id,
        modality=first.modality,
        encoder=first.encoder,
        build_params=first.build_params,
        num_nodes=int(offsets[-1]),
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
