"""The graph file: one ``torch_geometric.data.Data`` per case and modality.

``{graph_dir}/{modality}/{case_id}.pt`` (:func:`radiopath.layout.graph_path`) holds a
``torch.save``d ``Data`` with

================ ============================================================
``x``            float32 (nodes, features): mean patch feature of each node
``edge_index``   int64 (2, E): symmetric, no self-loops
``pos``          float32 (nodes, 2 | 3): node centroid, µm (slides) or mm (CT)
``assignment``   int64 (patches,): node index of every input patch, in the
                 order of the patch-feature file, to paint node scores back
``case_id``,     strings
``modality``,
``encoder``
``build_params`` dict of the settings the graph was built with
                 (:func:`radiopath.graphs.build.construction_params`); absent
                 from files written before they were recorded
``slide``,       only for a patient with several slides, whose graph is the
``slide_names``, disjoint union of its slides' graphs
``slide_patches`` (:func:`radiopath.graphs.build.join_slide_graphs`): int64
                 (nodes,) slide index of each node, the slides' names, int64
                 (slides,) each slide's number of patches (``assignment`` holds
                 the slides' patches one slide after the other)
================ ============================================================
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch_geometric.data import Data, HeteroData
from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
from torch_geometric.data.storage import GlobalStorage

from radiopath.io import atomic_torch_save
from radiopath.layout import graph_path
from radiopath.modality import NAMES

# The classes a graph file may contain: loading stays weights_only=True.
_SAFE = [Data, DataEdgeAttr, DataTensorAttr, GlobalStorage]


def save_graph(graph: Data, path: str | Path) -> None:
    """Write a graph atomically."""
    atomic_torch_save(graph, path)


def load_graph(path: str | Path) -> Data:
    """Read one graph file (without unpickling arbitrary objects)."""
    with torch.serialization.safe_globals(_SAFE):
        return torch.load(path, map_location="cpu", weights_only=True)


def slide_segments(graph: Data) -> list[tuple[str | None, slice]]:
    """``(slide name, slice of assignment)`` per slide of the graph; one ``(None, everything)`` for one image."""
    if "slide_patches" not in graph:
        return [(None, slice(0, len(graph.assignment)))]
    ends = torch.cumsum(graph.slide_patches, 0).tolist()
    return [(name, slice(end - count, end))
            for name, end, count in zip(graph.slide_names, ends, graph.slide_patches.tolist())]


def build_params(graph: Data) -> dict | None:
    """The construction settings a graph file records; None for a file from before they were recorded."""
    return graph.build_params if "build_params" in graph else None


def load_patient(graph_dir: str | Path, case_id: str) -> HeteroData:
    """A patient's graphs as ``HeteroData`` with one node type per modality found.

    Node type ``m`` carries ``x``, ``pos`` and ``assignment``; its edges are the
    ``(m, "near", m)`` edge type. Missing modalities are simply absent.
    """
    patient = HeteroData()
    patient.case_id = case_id
    for modality in NAMES:
        path = graph_path(graph_dir, modality, case_id)
        if not path.is_file():
            continue
        graph = load_graph(path)
        patient[modality].x = graph.x
        patient[modality].pos = graph.pos
        patient[modality].assignment = graph.assignment
        patient[modality, "near", modality].edge_index = graph.edge_index
    if not patient.node_types:
        raise FileNotFoundError(f"case {case_id!r}: no graph in {graph_dir}")
    return patient
