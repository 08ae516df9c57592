"""The encode stage: patch features for every case and modality of a cohort.

Reads the cohort manifest (``data.manifest``), preprocesses each case's CT and
slide, and writes ``{data.features_dir}/{modality}/{encoder}/{case_id}.pt`` (see
:mod:`radiopath.encoders.features`, paths in :mod:`radiopath.layout`). Finished
cases are skipped on a rerun (``overwrite=true`` redoes them); failed cases are
listed in ``failures.csv`` beside the features.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from radiopath.config import resolve_device
from radiopath.data.manifest import Manifest, load_manifest
from radiopath.encoders import ENCODERS
from radiopath.encoders.checkpoints import checkpoint_unpickling
from radiopath.encoders.extract import encode_ct_case, encode_wsi_case
from radiopath.entry import StageResult
from radiopath.layout import FAILURES_NAME, features_dir, features_path, part_filename
from radiopath.modality import RADIOLOGY, modality
from radiopath.repro import active
from radiopath.runner import RunSummary, run_cases


def _case_encoder(cfg: DictConfig, manifest: Manifest, name: str, encoder, device: torch.device):
    """``process(case_id) -> PatchFeatures`` for one modality: the CT or the slide path."""
    if name == RADIOLOGY.name:
        ct = OmegaConf.to_container(cfg.ct, resolve=True)
        return lambda case_id: encode_ct_case(case_id, manifest.image_path(case_id, "ct"),
                                              manifest.image_path(case_id, "mask"), encoder, ct, device)
    encoder.to(device).eval()  # tile encoders are plain torch modules; the CT encoders place themselves
    tissue = OmegaConf.to_container(cfg.wsi.tissue, resolve=True)
    tiling = OmegaConf.to_container(cfg.wsi.tiling, resolve=True)
    batch_size = cfg.encoder[name].batch_size
    return lambda case_id: encode_wsi_case(case_id, manifest.image_path(case_id, "wsi"), encoder, tissue, tiling,
                                           batch_size, device)


def encode_modality(cfg: DictConfig, manifest: Manifest, name: str) -> RunSummary:
    """Encode every case of one modality; returns what happened to each case."""
    encoder_cfg = cfg.encoder[name]
    with checkpoint_unpickling(cfg.get("trust_pickled_checkpoints", False)):
        encoder = ENCODERS.create(encoder_cfg.name, checkpoint=encoder_cfg.checkpoint, **encoder_cfg.kwargs)
    record = active()
    if isinstance(encoder, torch.nn.Module) and any(True for _ in encoder.parameters()):  # not pyradiomics
        record.parameters(f"encoder.{name} ({encoder_cfg.name})", encoder)
        record.weights(encoder_cfg.checkpoint, source=f"encoder.{name}.checkpoint ({encoder_cfg.name})")
    encode_case = _case_encoder(cfg, manifest, name, encoder, resolve_device(cfg.device))
    root = cfg.data.features_dir

    def output(case_id: str) -> Path:
        return features_path(root, name, encoder_cfg.name, case_id)

    summary = run_cases(
        f"encode {name} ({encoder_cfg.name})",
        manifest.case_ids,
        lambda case_id: encode_case(case_id).save(output(case_id)),
        is_done=lambda case_id: output(case_id).is_file(),
        overwrite=cfg.overwrite,
    )
    summary.add_failures(manifest.problems)
    failures = part_filename(FAILURES_NAME, shard=cfg.shard, num_shards=cfg.num_shards)
    summary.write_failures(features_dir(root, name, encoder_cfg.name) / failures)
    record.cases(summary)
    return summary


def load_modality_manifest(cfg: DictConfig, name: str) -> Manifest:
    """The manifest rows (of this job's shard) that carry modality ``name``'s images."""
    manifest = load_manifest(cfg.data.manifest, required=modality(name).image_columns,
                             allow_outside=cfg.data.get("allow_outside_paths", False))
    manifest = manifest.select_shard(cfg.shard, cfg.num_shards)
    active().cohort(manifest)
    return manifest


def check_config(cfg: DictConfig) -> None:
    """Fail before any case is read: every modality known, every encoder registered."""
    for name in cfg.modalities:
        modality(name)
        ENCODERS.get(cfg.encoder[name].name)


def run(cfg: DictConfig) -> StageResult:
    """Encode all configured modalities of the cohort."""
    check_config(cfg)
    summaries = [encode_modality(cfg, load_modality_manifest(cfg, m), m) for m in cfg.modalities]
    return StageResult.of_summaries(summaries, Path(cfg.data.features_dir), "features")

