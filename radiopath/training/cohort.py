"""The training cohort: survival from the manifest, graphs from the graph store.

A patient is kept when it has a graph of at least one requested modality; a
patient with none, or with unusable survival data, is returned as a
:class:`~radiopath.errors.CaseError` for the run to report. A patient missing
one modality is kept: the aggregators give that modality's block of the patient
vector as zeros, i.e. the training-fold mean after standardisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from radiopath.data.manifest import load_manifest
from radiopath.errors import CaseError
from radiopath.graphs.io import graph_path, load_graph


@dataclass
class Patient:
    """One patient's survival outcome and graphs (modality -> graph)."""

    case_id: str
    time: float
    event: int
    graphs: dict[str, Data]


@dataclass
class GraphCohort:
    """Patients usable for training, the node-feature width per modality, and the rejected cases."""

    patients: list[Patient]
    in_dims: dict[str, int]
    problems: list[CaseError] = field(default_factory=list)

    @property
    def case_ids(self) -> list[str]:
        return [p.case_id for p in self.patients]

    @property
    def times(self) -> np.ndarray:
        return np.array([p.time for p in self.patients], dtype=float)

    @property
    def events(self) -> np.ndarray:
        return np.array([p.event for p in self.patients], dtype=int)

    def modality_counts(self) -> dict[str, int]:
        """How many patients have each modality."""
        return {m: sum(m in p.graphs for p in self.patients) for m in self.in_dims}


def load_graph_cohort(manifest_path: str | Path, graph_dir: str | Path, modalities: list[str]) -> GraphCohort:
    """Join the manifest's ``os_time``/``os_event`` with the graphs of ``modalities``."""
    manifest = load_manifest(manifest_path, required=("os_time", "os_event"))
    problems = list(manifest.problems)
    patients, widths = [], {m: set() for m in modalities}
    for row in manifest.frame.itertuples(index=False):
        case_id = row.case_id
        if np.isnan(float(row.os_time)) or np.isnan(float(row.os_event)):
            problems.append(CaseError(case_id, "os_time or os_event is empty"))
            continue
        graphs = {}
        for modality in modalities:
            path = graph_path(graph_dir, modality, case_id)
            if not path.is_file():
                continue
            graph = load_graph(path)
            if graph.num_nodes == 0 or not torch.isfinite(graph.x).all():
                problems.append(CaseError(case_id, f"{modality} graph {path} is empty or has non-finite features"))
                continue
            # Only what the aggregators read: patch assignments and strings would be batched for nothing.
            graphs[modality] = Data(x=graph.x, edge_index=graph.edge_index, num_nodes=graph.num_nodes)
            widths[modality].add(graph.x.shape[1])
        if not graphs:
            problems.append(CaseError(case_id, f"no graph of {'/'.join(modalities)} in {graph_dir}"))
            continue
        patients.append(Patient(case_id, float(row.os_time), int(row.os_event), graphs))
    in_dims = {}
    for modality, found in widths.items():
        if not found:
            raise ValueError(f"no {modality} graphs in {Path(graph_dir) / modality}: build them first")
        if len(found) > 1:
            raise ValueError(f"{modality} graphs have different feature widths {sorted(found)}: mixed encoders?")
        in_dims[modality] = found.pop()
    return GraphCohort(patients, in_dims, problems)
