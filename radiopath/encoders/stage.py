"""The encode stage: patch features for every case and modality of a cohort.

Reads the cohort manifest (``data.manifest``), preprocesses each case's CT and
slide, and writes ``{data.features_dir}/{modality}/{encoder}/{case_id}.pt`` (see
:mod:`radiopath.encoders.features`, paths in :mod:`radiopath.layout`), or for slides
with ``encode.format=h5`` a CLAM/Trident HDF5 bag ``{case_id}.h5``
(:mod:`radiopath.encoders.bags`); a patient with several slides gets one file per slide,
``{case_id}/{slide}.pt`` (or ``.h5``). Finished cases are skipped on a rerun, whatever
format they were written in (``overwrite=true`` redoes them); so are cases whose
manifest row brings its own bag (``pathology_features``). Failed cases are listed
in ``failures.csv`` beside the features.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from radiopath.config import resolve_device
from radiopath.data.manifest import Manifest, SlideSource, load_manifest
from radiopath.encoders import ENCODERS
from radiopath.encoders.bags import write_bag
from radiopath.encoders.checkpoints import checkpoint_unpickling
from radiopath.encoders.extract import encode_ct_case, encode_wsi_case, keyed_slides
from radiopath.encoders.features import PatchFeatures
from radiopath.entry import StageResult
from radiopath.errors import check_choice
from radiopath.layout import FAILURES_NAME, FEATURE_FORMATS, feature_file, features_dir, part_filename, stored_features
from radiopath.modality import RADIOLOGY, modality
from radiopath.repro import active
from radiopath.runner import RunSummary, run_cases


def _case_encoder(cfg: DictConfig, manifest: Manifest, name: str, encoder, device: torch.device):
    """``encode(case_id, slide) -> PatchFeatures`` for one modality: the CT (``slide`` None), or one slide."""
    if name == RADIOLOGY.name:
        ct = OmegaConf.to_container(cfg.ct, resolve=True)
        return lambda case_id, _: encode_ct_case(case_id, manifest.image_path(case_id, "ct"),
                                                 manifest.image_path(case_id, "mask"), encoder, ct, device)
    encoder.to(device).eval()  # tile encoders are plain torch modules; the CT encoders place themselves
    tissue = OmegaConf.to_container(cfg.wsi.tissue, resolve=True)
    tiling = OmegaConf.to_container(cfg.wsi.tiling, resolve=True)
    batch_size = cfg.encoder[name].batch_size

    def encode_slide(case_id: str, slide: SlideSource | None) -> PatchFeatures:
        wsi, mpp = (None, None) if slide is None else (slide.wsi, slide.mpp)  # no slide: encode_wsi_case says so
        return encode_wsi_case(case_id, wsi, encoder, tissue, tiling, batch_size, device, mpp=mpp)

    return encode_slide


def _case_images(manifest: Manifest, name: str, case_id: str) -> list[tuple[str | None, SlideSource | None]]:
    """The case's images as ``(feature-store key, slide)``: ``(None, None)`` for a CT or a row without a slide."""
    if modality(name).bag_column is None:
        return [(None, None)]
    return keyed_slides(manifest, case_id) or [(None, None)]


def _writer(cfg: DictConfig, fmt: str):
    """``write(patches, path)`` in the configured format."""
    if fmt == "h5":
        tiling = cfg.wsi.tiling
        return lambda patches, path: write_bag(patches, path, tile_size=tiling.tile_size, tile_mpp=tiling.mpp)
    return lambda patches, path: patches.save(path)


def _feature_format(cfg: DictConfig, name: str) -> str:
    """The format modality ``name``'s features are written in: ``encode.format`` for slides, ``pt`` for CT."""
    return cfg.encode.format if modality(name).bag_column else "pt"


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
    root, fmt, bag_column = cfg.data.features_dir, _feature_format(cfg, name), modality(name).bag_column
    write = _writer(cfg, fmt)

    def stored(case_id: str, key: str | None) -> bool:
        return stored_features(root, name, encoder_cfg.name, case_id, slide=key) is not None

    def process(case_id: str) -> None:
        # slide by slide, so a crash keeps the slides already written and a rerun does only the others
        for key, slide in _case_images(manifest, name, case_id):
            if stored(case_id, key) and not cfg.overwrite:
                continue
            write(encode_case(case_id, slide),
                  feature_file(root, name, encoder_cfg.name, case_id, format=fmt, slide=key))
            for other in FEATURE_FORMATS.keys() - {fmt}:  # one file per slide: a stale one must not be read instead
                feature_file(root, name, encoder_cfg.name, case_id, format=other, slide=key).unlink(missing_ok=True)

    # A case whose row brings its bag is never encoded, not even with overwrite=true.
    with_bag = {c for c in manifest.case_ids if bag_column is not None and manifest.has(c, bag_column)}
    summary = run_cases(
        f"encode {name} ({encoder_cfg.name})",
        [c for c in manifest.case_ids if c not in with_bag],
        process,
        is_done=lambda case_id: all(stored(case_id, key) for key, _ in _case_images(manifest, name, case_id)),
        overwrite=cfg.overwrite,
    )
    summary.skipped += [c for c in manifest.case_ids if c in with_bag]
    summary.add_failures(manifest.problems)
    failures = part_filename(FAILURES_NAME, shard=cfg.shard, num_shards=cfg.num_shards)
    summary.write_failures(features_dir(root, name, encoder_cfg.name) / failures)
    record.cases(summary)
    return summary


def load_modality_manifest(cfg: DictConfig, name: str) -> Manifest:
    """The manifest rows (of this job's shard) that carry modality ``name``'s images."""
    manifest = load_manifest(cfg.data.manifest, required=modality(name).required_columns,
                             allow_outside=cfg.data.get("allow_outside_paths", False))
    manifest = manifest.select_shard(cfg.shard, cfg.num_shards)
    active().cohort(manifest)
    return manifest


def check_config(cfg: DictConfig) -> None:
    """Fail before any case is read: every modality known, every encoder registered, a known format."""
    check_choice("encode.format", cfg.encode.format, tuple(FEATURE_FORMATS))
    for name in cfg.modalities:
        modality(name)
        ENCODERS.get(cfg.encoder[name].name)


def run(cfg: DictConfig) -> StageResult:
    """Encode all configured modalities of the cohort."""
    check_config(cfg)
    summaries = [encode_modality(cfg, load_modality_manifest(cfg, m), m) for m in cfg.modalities]
    return StageResult.of_summaries(summaries, Path(cfg.data.features_dir), "features")

