"""``python -m radiopath.encode``: patch features for every case and modality.

Reads the cohort manifest (``data.manifest``), preprocesses each case's CT and
slide, and writes ``{data.features_dir}/{modality}/{encoder}/{case_id}.pt`` (see
:mod:`radiopath.encoders.features`). Finished cases are skipped on a rerun
(``overwrite=true`` redoes them); failed cases are listed in ``failures.csv``
beside the features and make the exit status non-zero.

Examples::

    python -m radiopath.encode data.manifest=data/demo/manifest.csv
    python -m radiopath.encode data.manifest=/cohort/manifest.csv \\
        encoder/pathology=uni encoder.pathology.checkpoint=/models/uni/pytorch_model.bin
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from radiopath.config import resolve_device
from radiopath.data.manifest import Manifest, load_manifest
from radiopath.encoders import build_encoder
from radiopath.encoders.checkpoints import checkpoint_unpickling
from radiopath.encoders.extract import encode_ct_case, encode_wsi_case
from radiopath.encoders.features import features_path
from radiopath.repro import active, record_filename, run_record
from radiopath.runner import RunSummary, failures_filename, run_cases

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = {"radiology": ("ct", "mask"), "pathology": ("wsi",)}


def encoder_dirname(name: str) -> str:
    """Folder name for an encoder (``timm:resnet18`` -> ``timm-resnet18``)."""
    return name.replace(":", "-").replace("/", "-")


def encode_modality(cfg: DictConfig, manifest: Manifest, modality: str) -> RunSummary:
    """Encode every case of one modality; returns what happened to each case."""
    encoder_cfg = cfg.encoder[modality]
    with checkpoint_unpickling(cfg.get("trust_pickled_checkpoints", False)):
        encoder = build_encoder(encoder_cfg.name, checkpoint=encoder_cfg.checkpoint, **encoder_cfg.kwargs)
    record = active()
    if isinstance(encoder, torch.nn.Module) and any(True for _ in encoder.parameters()):  # not pyradiomics
        record.parameters(f"encoder.{modality} ({encoder_cfg.name})", encoder)
        record.weights(encoder_cfg.checkpoint, source=f"encoder.{modality}.checkpoint ({encoder_cfg.name})")
    device = resolve_device(cfg.device)
    if modality == "pathology":
        encoder.to(device).eval()
    out_dir = Path(cfg.data.features_dir)
    label = encoder_dirname(encoder_cfg.name)

    def output(case_id: str) -> Path:
        return features_path(out_dir, modality, label, case_id)

    def process(case_id: str) -> None:
        if modality == "radiology":
            result = encode_ct_case(
                case_id,
                manifest.image_path(case_id, "ct"),
                manifest.image_path(case_id, "mask"),
                encoder,
                OmegaConf.to_container(cfg.ct, resolve=True),
                device,
            )
        else:
            result = encode_wsi_case(
                case_id,
                manifest.image_path(case_id, "wsi"),
                encoder,
                OmegaConf.to_container(cfg.wsi.tissue, resolve=True),
                OmegaConf.to_container(cfg.wsi.tiling, resolve=True),
                encoder_cfg.batch_size,
                device,
            )
        result.save(output(case_id))

    summary = run_cases(
        f"encode {modality} ({encoder_cfg.name})",
        manifest.case_ids,
        process,
        is_done=lambda case_id: output(case_id).is_file(),
        overwrite=cfg.overwrite,
    )
    summary.add_failures(manifest.problems)
    summary.write_failures(out_dir / modality / label / failures_filename(cfg.shard, cfg.num_shards))
    record.cases(summary)
    return summary


def load_modality_manifest(cfg: DictConfig, modality: str) -> Manifest:
    """The manifest rows (of this job's shard) that carry ``modality``'s images."""
    if modality not in REQUIRED_COLUMNS:
        raise ValueError(f"unknown modality {modality!r}; choose from {sorted(REQUIRED_COLUMNS)}")
    manifest = load_manifest(cfg.data.manifest, required=REQUIRED_COLUMNS[modality],
                             allow_outside=cfg.data.get("allow_outside_paths", False))
    manifest = manifest.select_shard(cfg.shard, cfg.num_shards)
    active().cohort(manifest)
    return manifest


def encode_cohort(cfg: DictConfig) -> list[RunSummary]:
    """Encode all configured modalities of the cohort."""
    return [encode_modality(cfg, load_modality_manifest(cfg, m), m) for m in cfg.modalities]


@hydra.main(version_base="1.3", config_path="conf", config_name="encode")
def main(cfg: DictConfig) -> None:
    with run_record("encode", cfg, cfg.data.features_dir, record_filename(cfg.shard, cfg.num_shards)):
        summaries = encode_cohort(cfg)
    for summary in summaries:
        print(summary.report())
    print(f"features in {Path(cfg.data.features_dir).resolve()}")
    if not all(summary.ok for summary in summaries):
        sys.exit(1)


if __name__ == "__main__":
    main()
