"""The build_graphs stage: one graph per case and modality (a patient's slides joined in one).

Runs the encode stage's per-modality loop for cases whose patch features are
missing, then clusters each case's patches in space and feature space and connects
the clusters (:mod:`radiopath.graphs.build`), writing
``{output_dir}/{modality}/{case_id}.pt`` (:mod:`radiopath.layout`). A case whose
manifest row gives a feature bag (``pathology_features``, CLAM/Trident HDF5) is built
straight from it (:func:`radiopath.encoders.extract.load_bag_case`); the others from
the feature store (``.pt`` or ``.h5``). Finished graphs
are skipped on a rerun (``overwrite=true`` rebuilds them); a failed case is reported
in ``failures.csv`` and the exit status, the others go on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from radiopath.data.manifest import Manifest
from radiopath.encoders.extract import case_patches
from radiopath.encoders.features import PatchFeatures
from radiopath.encoders.stage import check_config as check_encode_config
from radiopath.encoders.stage import encode_modality, load_modality_manifest
from radiopath.entry import StageResult
from radiopath.graphs.build import build_case_graph
from radiopath.graphs.io import load_graph, save_graph
from radiopath.layout import FAILURES_NAME, graph_path, part_filename
from radiopath.modality import modality as modality_spec
from radiopath.repro import active
from radiopath.runner import RunSummary, run_cases


def case_parts(cfg: DictConfig, manifest: Manifest | None, modality: str,
               case_id: str) -> tuple[list[PatchFeatures], list[str]]:
    """The case's patch features, one per image (its manifest's feature bags where the row gives them, else
    the feature store's files), and the images' names (the slides' file stems; the case id for one image)."""
    parts = case_patches(case_id, modality, features_dir=cfg.data.features_dir, encoder=cfg.encoder[modality].name,
                         manifest=manifest, fallback_mpp=cfg.wsi.fallback_mpp)
    slides = manifest.slides(case_id) if manifest is not None and modality_spec(modality).bag_column else []
    return parts, [slide.name for slide in slides] or [case_id]


def build_modality_graphs(cfg: DictConfig, case_ids: list[str], modality: str, *,
                          manifest: Manifest | None = None) -> RunSummary:
    """Build the graphs of one modality from its patch features (the manifest's bags where it gives them)."""
    params = OmegaConf.to_container(cfg.graph[modality])
    if cfg.graph_threads:
        torch.set_num_threads(int(cfg.graph_threads))

    def process(case_id: str) -> None:
        parts, names = case_parts(cfg, manifest, modality, case_id)
        save_graph(build_case_graph(parts, names=names, **params), graph_path(cfg.output_dir, modality, case_id))

    summary = run_cases(
        f"graphs {modality}",
        case_ids,
        process,
        is_done=lambda case_id: graph_path(cfg.output_dir, modality, case_id).is_file(),
        overwrite=cfg.overwrite,
    )
    failures = part_filename(FAILURES_NAME, shard=cfg.shard, num_shards=cfg.num_shards)
    summary.write_failures(Path(cfg.output_dir) / modality / failures)
    active().cases(summary)
    return summary


def graph_statistics(graph_dir: str | Path, modality: str, case_ids: list[str]) -> str:
    """One line of node/edge statistics over the graphs that exist."""
    if not case_ids:
        return f"{modality}: no graphs"
    graphs = [load_graph(graph_path(graph_dir, modality, case_id)) for case_id in case_ids]
    nodes = np.array([g.num_nodes for g in graphs])
    edges = np.array([g.edge_index.shape[1] // 2 for g in graphs])
    return (
        f"{modality}: {len(graphs)} graphs, nodes mean {nodes.mean():.0f} (min {nodes.min()}, max {nodes.max()}), "
        f"undirected edges mean {edges.mean():.0f} (min {edges.min()}, max {edges.max()})"
    )


def run(cfg: DictConfig) -> StageResult:
    """Encode missing features, then build every configured modality's graphs."""
    check_encode_config(cfg)
    summaries, statistics = [], []
    for modality in cfg.modalities:
        manifest = load_modality_manifest(cfg, modality)
        encoded = encode_modality(cfg, manifest, modality)
        failed = {case_id for case_id, _ in encoded.failed}
        built = build_modality_graphs(cfg, [c for c in manifest.case_ids if c not in failed], modality,
                                      manifest=manifest)
        summaries += [encoded, built]
        done = [c for c in manifest.case_ids if graph_path(cfg.output_dir, modality, c).is_file()]
        statistics.append(graph_statistics(cfg.output_dir, modality, done))
    result = StageResult.of_summaries(summaries, Path(cfg.output_dir), "graphs")
    result.lines = statistics + result.lines
    return result
