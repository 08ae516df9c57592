"""Turn one case's images into a :class:`PatchFeatures` file's content.

CT: read CT and mask -> :func:`~radiopath.preprocess.ct.preprocess_ct` -> a
:class:`VolumeEncoder`. WSI: open the slide -> tissue tiles at the target µm/px ->
a :class:`TileEncoder` in batches (on the GPU when one is given).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from radiopath.data.readers import open_slide, read_ct, slide_mpp
from radiopath.encoders.base import TileEncoder, VolumeEncoder
from radiopath.encoders.features import PatchFeatures
from radiopath.errors import CaseError
from radiopath.modality import PATHOLOGY, RADIOLOGY
from radiopath.preprocess.ct import preprocess_ct
from radiopath.preprocess.wsi import read_tiles, tile_grid, tissue_mask


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
) -> PatchFeatures:
    """Tile one slide's tissue and encode the tiles in batches."""
    if wsi_path is None:
        raise CaseError(case_id, "the manifest gives no whole-slide image")
    slide = open_slide(wsi_path, case_id)
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
