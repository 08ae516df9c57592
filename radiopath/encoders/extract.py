"""Turn one case's images (or its ready-made feature bag) into a :class:`PatchFeatures` file's content.

CT: read CT and mask -> :func:`~radiopath.preprocess.ct.preprocess_ct` -> a
:class:`VolumeEncoder`. WSI: open the slide -> tissue tiles at the target µm/px ->
a :class:`TileEncoder` in batches (on the GPU when one is given). Feature bag
(CLAM/Trident HDF5, :func:`load_bag_case`): read, checked against the slide when
there is one, no encoding.

The slide's µm per level-0 pixel comes from, in this order: the manifest's ``mpp``
column, the slide's ``openslide.mpp-x``, a bag's attributes, ``wsi.fallback_mpp``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from radiopath.data.readers import open_slide, read_ct, recorded_mpp, slide_mpp
from radiopath.data.manifest import Manifest, SlideSource
from radiopath.encoders.bags import FeatureBag, check_inside, coordinate_step, load_features, read_bag
from radiopath.encoders.base import TileEncoder, VolumeEncoder
from radiopath.encoders.features import PatchFeatures
from radiopath.errors import CaseError
from radiopath.layout import features_path, slide_keys, stored_features
from radiopath.modality import PATHOLOGY, RADIOLOGY
from radiopath.modality import modality as modality_spec
from radiopath.preprocess.ct import preprocess_ct
from radiopath.preprocess.wsi import read_tiles, tile_grid, tissue_mask

log = logging.getLogger(__name__)


def encode_ct_case(
    case_id: str,
    ct_path: Path | None,
    mask_path: Path | None,
    encoder: VolumeEncoder,
    preprocess: dict,
    device: torch.device | str = "cpu",
) -> PatchFeatures:
    """Preprocess one CT with its tumour mask and encode it."""
    if ct_path is None or mask_path is None:
        raise CaseError(case_id, "the manifest gives no CT and/or no tumour mask")
    image = read_ct(ct_path, case_id)
    mask = read_ct(mask_path, case_id)
    prepared = preprocess_ct(case_id, image, mask, **preprocess)
    features, coords = encoder.encode(prepared, device=device)
    return PatchFeatures(
        case_id=case_id,
        modality=RADIOLOGY.name,
        encoder=encoder.name,
        features=features,
        coords=coords,
        patch_size=encoder.patch_size_mm(prepared),
    )


def encode_wsi_case(
    case_id: str,
    wsi_path: Path | None,
    encoder: TileEncoder,
    tissue: dict,
    tiling: dict,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    *,
    mpp: float | None = None,
) -> PatchFeatures:
    """Tile one slide's tissue and encode the tiles in batches.

    ``mpp`` (the manifest's ``mpp`` column) overrides the slide's recorded µm per level-0 pixel.
    """
    if wsi_path is None:
        raise CaseError(case_id, "the manifest gives no whole-slide image")
    slide = open_slide(wsi_path, case_id, mpp=mpp)
    try:
        level0_mpp = slide_mpp(slide, case_id, fallback=tiling.get("fallback_mpp"))
        mask, downsample = tissue_mask(slide, case_id, **tissue)
        grid = tile_grid(slide, case_id, tissue=(mask, downsample), **tiling)
        chunks = []
        for start in range(0, len(grid.coords), batch_size):
            indices = np.arange(start, min(start + batch_size, len(grid.coords)))
            chunks.append(encoder.encode_tiles(read_tiles(slide, grid, indices), device=device))
    finally:
        slide.close()
    return PatchFeatures(
        case_id=case_id,
        modality=PATHOLOGY.name,
        encoder=encoder.name,
        features=np.concatenate(chunks),
        coords=grid.coords,
        patch_size=(grid.tile_size_level0, grid.tile_size_level0),
        level0_mpp=level0_mpp,
    )


def load_bag_case(
    case_id: str,
    bag_path: Path,
    *,
    wsi_path: Path | None,
    mpp: float | None,
    fallback_mpp: float | None,
) -> PatchFeatures:
    """One case's patch features from its CLAM/Trident bag, without encoding.

    The slide (``wsi_path``), where given, supplies its resolution, its size (every
    patch must start on it) and, for CLAM's ``patch_level``, its level downsamples.
    ``mpp`` is the manifest's ``mpp`` column and ``fallback_mpp`` ``wsi.fallback_mpp``.
    Raises :class:`CaseError` naming the case and the bag when the bag is unusable
    or no resolution is known.
    """
    bag = read_bag(bag_path, case_id=case_id)
    slide_size, slide_recorded, downsamples = bag.level0_size, None, None
    if wsi_path is not None:
        slide = open_slide(wsi_path, case_id)
        try:
            slide_size, slide_recorded, downsamples = slide.dimensions, recorded_mpp(slide), slide.level_downsamples
        finally:
            slide.close()
    if slide_size is not None:
        check_inside(bag, case_id=case_id, size=slide_size)
    level0_mpp = next((value for value in (mpp, slide_recorded, bag.level0_mpp, fallback_mpp) if value is not None),
                      None)
    if level0_mpp is None:
        raise CaseError(case_id, f"feature bag {bag_path} does not say its µm per pixel (no level0_mpp or "
                                 "level0_magnification attribute), and there is no slide that does, no mpp column "
                                 "and no wsi.fallback_mpp")
    size = _patch_size(case_id, bag, downsamples)
    return PatchFeatures(case_id=case_id, modality=PATHOLOGY.name, encoder=bag.encoder, features=bag.features,
                         coords=bag.coords, patch_size=(size, size), level0_mpp=float(level0_mpp))


def _patch_size(case_id: str, bag: FeatureBag, downsamples: tuple[float, ...] | None) -> float:
    """The bag's patch side in level-0 pixels; the coordinate grid's step where no attribute says it.

    CLAM's feature bags record no patch size. Patches of a grid are a step apart (less
    with overlap, which then only shifts every centre alike and leaves the graph as it is).
    """
    size = bag.patch_size_level0(level_downsamples=downsamples)
    if size is not None:
        return size
    step = coordinate_step(bag.coords)
    if step is None:
        raise CaseError(case_id, f"feature bag {bag.path} records no patch size (patch_size_level0, or patch_size "
                                 "with downsample, magnifications or patch_level) and has one patch only")
    log.warning("case %s: feature bag %s records no patch size; using its coordinate step, %g level-0 px",
                case_id, bag.path, step)
    return step


def case_patches(case_id: str, modality: str, *, features_dir: str | Path, encoder: str,
                 manifest: Manifest | None, fallback_mpp: float | None) -> list[PatchFeatures]:
    """A case's patch features as the graph builder reads them: one :class:`PatchFeatures` per image.

    CT: the one volume's. Slides: one per slide of the manifest's row (:meth:`Manifest.slides`),
    in its order: the slide's feature bag where the row gives one (``pathology_features``), else
    the feature store's file of ``encoder`` (``.pt`` or ``.h5``; per slide for a patient with
    several). Raises :class:`CaseError` when a slide has neither, or when the slides' features
    come from different encoders or have different widths.
    """
    spec = modality_spec(modality)
    slides = keyed_slides(manifest, case_id) if manifest is not None and spec.bag_column is not None else []
    if not slides:
        return [_stored(case_id, modality, features_dir=features_dir, encoder=encoder, slide=None)]
    parts = []
    for key, slide in slides:
        if slide.bag is not None:
            parts.append(load_bag_case(case_id, slide.bag, wsi_path=slide.wsi, mpp=slide.mpp,
                                       fallback_mpp=fallback_mpp))
        else:
            parts.append(_stored(case_id, modality, features_dir=features_dir, encoder=encoder, slide=key))
    check_alike(case_id, parts, [slide.bag or slide.wsi for _, slide in slides])
    return parts


def keyed_slides(manifest: Manifest, case_id: str) -> list[tuple[str | None, SlideSource]]:
    """The case's slides, each with its feature-store key (:func:`radiopath.layout.slide_keys`)."""
    slides = manifest.slides(case_id)
    return list(zip(slide_keys([slide.name for slide in slides]), slides))


def _stored(case_id: str, modality: str, *, features_dir: str | Path, encoder: str, slide: str | None) -> PatchFeatures:
    """The feature store's file of one case (or slide); :class:`CaseError` when it has none."""
    source = stored_features(features_dir, modality, encoder, case_id, slide=slide)
    if source is None:
        expected = features_path(features_dir, modality, encoder, case_id, slide=slide)
        raise CaseError(case_id, f"no {modality} patch features ({expected}): encoding failed or was skipped")
    return load_features(source)


def check_alike(case_id: str, parts: list[PatchFeatures], sources: list[Path | None]) -> None:
    """:class:`CaseError` unless every slide of the patient has features of one encoder and one width.

    A patient's slides are pooled together, so their features must live in one feature space.
    """
    first = parts[0]
    for part, source in zip(parts[1:], sources[1:]):
        if part.encoder != first.encoder or part.features.shape[1] != first.features.shape[1]:
            raise CaseError(case_id, f"its slides' features differ: {sources[0]} has {first.features.shape[1]} "
                                     f"features of encoder {first.encoder!r}, {source} "
                                     f"{part.features.shape[1]} of {part.encoder!r}; a patient's slides are "
                                     "pooled together and need one encoder")
