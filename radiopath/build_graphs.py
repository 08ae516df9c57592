"""``python -m radiopath.build_graphs``: one graph per case and modality.

Runs the encode stage for cases whose patch features are missing, then clusters
each case's patches in space and feature space and connects the clusters
(:mod:`radiopath.graphs`), writing ``{output_dir}/{modality}/{case_id}.pt``.
Finished graphs are skipped on a rerun (``overwrite=true`` rebuilds them); a failed
case is reported in ``failures.csv`` and the exit status, the others go on.

Examples::

    python -m radiopath.build_graphs data.manifest=data/demo/manifest.csv output_dir=graphs/demo
    # a cohort split into 8 SLURM jobs, or 4 local processes:
    python -m radiopath.build_graphs -m hydra/launcher=submitit_slurm num_shards=8 shard='range(8)'
    python -m radiopath.build_graphs -m hydra/launcher=joblib num_shards=4 shard='range(4)'
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from radiopath import config  # noqa: F401  (registers the ${dirname:} resolver)
from radiopath.encode import encode_modality, encoder_dirname, load_modality_manifest
from radiopath.encoders.features import PatchFeatures, features_path
from radiopath.errors import CaseError
from radiopath.graphs.build import build_graph
from radiopath.graphs.io import graph_path, load_graph, save_graph
from radiopath.repro import active, record_filename, run_record
from radiopath.runner import RunSummary, failures_filename, run_cases


def build_modality_graphs(cfg: DictConfig, case_ids: list[str], modality: str) -> RunSummary:
    """Build the graphs of one modality from its patch-feature files."""
    features_dir = Path(cfg.data.features_dir) / modality / encoder_dirname(cfg.encoder[modality].name)
    params = OmegaConf.to_container(cfg.graph[modality])
    if cfg.graph_threads:
        torch.set_num_threads(int(cfg.graph_threads))

    def process(case_id: str) -> None:
        source = features_dir / f"{case_id}.pt"
        if not source.is_file():
            raise CaseError(case_id, f"no {modality} patch features ({source}): encoding failed or was skipped")
        save_graph(build_graph(PatchFeatures.load(source), **params), graph_path(cfg.output_dir, modality, case_id))

    summary = run_cases(
        f"graphs {modality}",
        case_ids,
        process,
        is_done=lambda case_id: graph_path(cfg.output_dir, modality, case_id).is_file(),
        overwrite=cfg.overwrite,
    )
    summary.write_failures(Path(cfg.output_dir) / modality / failures_filename(cfg.shard, cfg.num_shards))
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


def build_cohort_graphs(cfg: DictConfig) -> list[RunSummary]:
    """Encode missing features, then build every configured modality's graphs."""
    summaries = []
    for modality in cfg.modalities:
        manifest = load_modality_manifest(cfg, modality)
        encoded = encode_modality(cfg, manifest, modality)
        failed = {case_id for case_id, _ in encoded.failed}
        built = build_modality_graphs(cfg, [c for c in manifest.case_ids if c not in failed], modality)
        summaries += [encoded, built]
        done = [c for c in manifest.case_ids if graph_path(cfg.output_dir, modality, c).is_file()]
        print(graph_statistics(cfg.output_dir, modality, done))
    return summaries


@hydra.main(version_base="1.3", config_path="conf", config_name="build_graphs")
def main(cfg: DictConfig) -> None:
    with run_record("build_graphs", cfg, cfg.output_dir, record_filename(cfg.shard, cfg.num_shards)):
        summaries = build_cohort_graphs(cfg)
    for summary in summaries:
        print(summary.report())
    print(f"graphs in {Path(cfg.output_dir).resolve()}")
    if not all(summary.ok for summary in summaries):
        sys.exit(1)


if __name__ == "__main__":
    main()
