"""Does node importance find the planted regions? Per-patient AUROC against the planted nodes.

For every run with node-importance files, every test patient (each case is a test
patient of one fold) and every modality of its importance file, the AUROC of the
importance against the planted nodes (:mod:`radiopath.report.truth`). A patient is
*scored* when its graph has planted and unplanted nodes; otherwise its status says why
not (no truth, no planted node, all nodes planted, or failed with the error naming the
case) and it counts under that status, never as an AUROC of 0 or 0.5. The summary per
run and modality is the mean (± sample sd) over the scored patients of all folds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from radiopath.data.manifest import Manifest
from radiopath.errors import CaseError
from radiopath.layout import fold_of, graph_path
from radiopath.modality import modality as modality_spec
from radiopath.report.overlays import PatchTruth, load_case_patches, load_importance
from radiopath.report.runs import Run
from radiopath.report.table import format_cell
from radiopath.report.truth import (CohortTruth, NodeTruth, TruthMask, importance_auroc, load_mask, node_truth,
                                    patch_fractions)

SCORED, NO_PLANTED, ALL_PLANTED = "scored", "no planted node", "all nodes planted"
NO_TRUTH, FAILED = "no truth", "failed"
STATUSES = (SCORED, NO_PLANTED, ALL_PLANTED, NO_TRUTH, FAILED)
PATIENT_COLUMNS = ["aggregator", "run", "fold", "case_id", "modality", "n_nodes", "n_planted", "auroc", "status",
                   "reason"]
SUMMARY_COLUMNS = ["aggregator", "run", "modality", "auroc_cell", "auroc_mean", "auroc_std",
                   *(f"n_{status.replace(' ', '_')}" for status in STATUSES)]


class NodeTruthSource:
    """Node truth of one cohort, computed once per graph for all runs that share it."""

    def __init__(self, truth: CohortTruth, manifest: Manifest, planted_fraction: float):
        self.truth = truth
        self.manifest = manifest
        self.planted_fraction = planted_fraction
        self._nodes: dict[tuple, NodeTruth] = {}

    def mask(self, case_id: str, modality: str) -> TruthMask | None:
        """The case's checked truth mask (None without truth for that modality)."""
        column = modality_spec(modality).image_column
        image = self.manifest.image_path(case_id, column) if (
            column in self.manifest.frame.columns and case_id in set(self.manifest.case_ids)) else None
        return load_mask(self.truth, case_id, modality, image)

    def nodes(self, case_id: str, modality: str, graph_dir: str, features_dir: str) -> NodeTruth | None:
        """Planted fraction and label of each node of the case's graph (None without truth)."""
        if self.truth.file(case_id, modality) is None:
            return None
        key = (str(graph_path(graph_dir, modality, case_id)), str(features_dir))
        if key not in self._nodes:
            mask = self.mask(case_id, modality)
            graph, patches = load_case_patches(graph_dir, features_dir, modality, case_id, manifest=self.manifest)
            self._nodes[key] = node_truth(case_id, patch_fractions(mask, patches), graph.assignment.numpy(),
                                          graph.num_nodes, self.planted_fraction)
        return self._nodes[key]

    def patch_truth(self, case_id: str, modality: str, graph_dir: str, features_dir: str) -> PatchTruth | None:
        """What an overlay draws beside the importance: the mask and each patch's node planted fraction."""
        nodes = self.nodes(case_id, modality, graph_dir, features_dir)
        if nodes is None:
            return None
        return PatchTruth(self.mask(case_id, modality), nodes.patch_fraction)


def score_patient(importance: np.ndarray, truth: NodeTruth | None) -> dict:
    """``n_nodes, n_planted, auroc, status`` of one patient and modality."""
    if truth is None:
        return {"n_nodes": len(importance), "n_planted": math.nan, "auroc": math.nan, "status": NO_TRUTH}
    n_planted = int(truth.planted.sum())
    auroc = importance_auroc(importance=torch.from_numpy(importance), truth=torch.from_numpy(truth.planted))
    status = NO_PLANTED if n_planted == 0 else ALL_PLANTED if n_planted == len(importance) else SCORED
    return {"n_nodes": len(importance), "n_planted": n_planted, "auroc": auroc, "status": status}


def score_run(run: Run, source: NodeTruthSource) -> pd.DataFrame:
    """One row per test patient and modality of ``run`` (:data:`PATIENT_COLUMNS`)."""
    data = run.config.data
    rows = []
    for case_id, path in sorted(run.importance.items()):
        base = {"aggregator": run.label, "run": str(run.path), "fold": fold_of(path), "case_id": case_id}
        try:
            importance = load_importance(path)
        except Exception as error:  # noqa: BLE001 - a damaged file is reported like a missing one
            rows.append({**base, "modality": "", "status": FAILED, "reason": f"cannot read {path}: {error}"})
            continue
        for modality, values in importance.items():
            try:
                truth = source.nodes(case_id, modality, data.graph_dir, data.features_dir)
                rows.append({**base, "modality": modality, **score_patient(values, truth), "reason": ""})
            except (CaseError, OSError, ValueError) as error:
                reason = str(error) if isinstance(error, CaseError) else f"case {case_id!r}: {error}"
                rows.append({**base, "modality": modality, "n_nodes": len(values), "status": FAILED,
                             "reason": reason})
    return pd.DataFrame(rows, columns=PATIENT_COLUMNS).astype({"n_nodes": "Int64", "n_planted": "Int64"})


def summarise(patients: pd.DataFrame, decimals: int) -> pd.DataFrame:
    """Per run and modality: mean and sd of the scored patients' AUROC, the cell text and a count per status."""
    rows = []
    for (label, run, modality), part in patients.groupby(["aggregator", "run", "modality"], sort=False):
        if not modality:
            continue  # an unreadable importance file: reported, not a modality
        scored = part.loc[part["status"] == SCORED, "auroc"].to_numpy(float)
        mean = float(scored.mean()) if len(scored) else math.nan
        std = float(scored.std(ddof=1)) if len(scored) > 1 else math.nan
        counts = {f"n_{status.replace(' ', '_')}": int((part["status"] == status).sum()) for status in STATUSES}
        rows.append({"aggregator": label, "run": run, "modality": modality,
                     "auroc_cell": format_cell(mean, std, len(scored), len(scored), decimals),
                     "auroc_mean": mean, "auroc_std": std, **counts})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
