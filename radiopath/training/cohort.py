"""The training cohort: survival from the manifest, graphs from the graph store.

A patient is kept when it has a graph of at least one requested modality; a
patient with none, or with unusable survival data, is returned as a
:class:`~radiopath.errors.CaseError` for the run to report. A patient missing
one modality is kept: the aggregators give that modality's block of the patient
vector as zeros, i.e. the training-fold mean after standardisation.

The graphs of one modality must have been built with one setting
(:func:`radiopath.graphs.build.construction_params`, recorded in each file): a
cohort mixing settings, or mixing files with and without recorded settings, is
refused unless ``allow_mixed_graphs`` says otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from radiopath.data.manifest import load_manifest
from radiopath.errors import CaseError
from radiopath.graphs.io import build_params, load_graph
from radiopath.layout import graph_path

log = logging.getLogger(__name__)
SHOWN_CASES = 5  # case ids a message lists per group of graphs


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


def load_graph_cohort(manifest_path: str | Path, graph_dir: str | Path, modalities: list[str], *,
                      allow_mixed_graphs: bool) -> GraphCohort:
    """Join the manifest's ``os_time``/``os_event`` with the graphs of ``modalities``.

    ``allow_mixed_graphs`` lets a modality's graphs differ in their construction
    settings (a warning instead of a ``ValueError`` naming the cases and settings).
    """
    manifest = load_manifest(manifest_path, required=("os_time", "os_event"))
    problems = list(manifest.problems)
    patients, widths = [], {m: set() for m in modalities}
    settings = {m: {} for m in modalities}  # modality -> case_id -> recorded build settings (None: unknown)
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
            settings[modality][case_id] = build_params(graph)
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
        mixed = _mixed_settings(settings[modality])
        if mixed:
            message = f"{modality} graphs in {Path(graph_dir) / modality} {mixed}"
            if not allow_mixed_graphs:
                raise ValueError(f"{message}; rebuild them with one setting (python -m radiopath.build_graphs "
                                 "overwrite=true), or set allow_mixed_graphs=true to train on them as they are")
            log.warning("%s; training on them as they are (allow_mixed_graphs=true)", message)
    return GraphCohort(patients, in_dims, problems)


def _mixed_settings(by_case: dict[str, dict | None]) -> str | None:
    """What differs among graphs' recorded build settings (case_id -> settings, None unrecorded); None if alike."""
    groups: dict[tuple | None, list[str]] = {}
    for case_id, params in by_case.items():
        groups.setdefault(None if params is None else tuple(sorted(params.items())), []).append(case_id)
    if len(groups) < 2:
        return None
    if None in groups:
        recorded = [case_id for key, cases in groups.items() if key is not None for case_id in cases]
        return (f"mix files without recorded build settings, written before graphs recorded them "
                f"({_cases(groups[None])}), with files that record them ({_cases(recorded)}): "
                "the old files' settings are unknown")
    recorded = [dict(key) for key in groups]
    keys = sorted({key for params in recorded for key in params})
    differing = [key for key in keys if len({params.get(key) for params in recorded}) > 1]
    parts = [", ".join(f"{key}={params.get(key)!r}" for key in differing) + f" ({_cases(cases)})"
             for params, cases in sorted(zip(recorded, groups.values()), key=lambda group: -len(group[1]))]
    return f"were built with different {', '.join(differing)}: " + "; ".join(parts)


def _cases(case_ids: list[str]) -> str:
    """``3 cases: a, b, c`` (the first few ids of a long list, then ``…``)."""
    shown = ", ".join(case_ids[:SHOWN_CASES]) + (", …" if len(case_ids) > SHOWN_CASES else "")
    return f"{len(case_ids)} case{'s' if len(case_ids) != 1 else ''}: {shown}"
