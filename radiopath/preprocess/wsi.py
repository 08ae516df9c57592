"""Whole-slide image preprocessing with OpenSlide: tissue mask, tile grid, tile reading.

:func:`tissue_mask` thresholds the saturation of a low-resolution thumbnail;
:func:`tile_grid` lays square tiles of ``tile_size`` pixels at ``mpp`` µm/px over
level 0 and keeps those mostly on tissue; :func:`read_tiles` reads a batch of
them from the open slide. Tile positions are level-0 pixels throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import openslide
from PIL import Image
from skimage.filters import threshold_otsu
from skimage.morphology import remove_small_holes, remove_small_objects

from radiopath.data.readers import slide_mpp
from radiopath.errors import CaseError

TISSUE_METHODS = ("otsu", "threshold")
# Scanners report e.g. 0.2527 µm/px for a nominal 0.25: allow this much upsampling.
MPP_TOLERANCE = 0.1


@dataclass(frozen=True)
class TileGrid:
    """Square tiles on tissue, at ``mpp`` µm/px and ``tile_size`` pixels a side.

    ``coords`` are the level-0 pixel (x, y) of each tile's top-left corner;
    a tile spans ``tile_size_level0`` level-0 pixels. ``level`` is the pyramid
    level the tiles are read from, ``level_downsample`` its downsample.
    """

    case_id: str
    coords: np.ndarray
    tile_size_level0: float
    mpp: float
    tile_size: int
    level: int
    level_downsample: float


def tissue_mask(
    slide: openslide.OpenSlide,
    case_id: str,
    *,
    thumbnail_mpp: float = 8.0,
    max_thumbnail_px: int = 4096,
    method: str = "otsu",
    min_saturation: float = 0.05,
    min_area_um2: float = 10_000.0,
    max_hole_um2: float = 10_000.0,
    fallback_mpp: float | None = None,
) -> tuple[np.ndarray, float]:
    """Tissue mask of a slide thumbnail and the thumbnail's downsample from level 0.

    Tissue is where the saturation exceeds Otsu's threshold (``method="otsu"``,
    never below ``min_saturation``) or ``min_saturation`` alone
    (``method="threshold"``, for slides that are nearly all tissue). Pieces smaller
    than ``min_area_um2`` are dropped and holes smaller than ``max_hole_um2``
    filled. The thumbnail is made at ``thumbnail_mpp`` µm/px, coarser if its long
    side would exceed ``max_thumbnail_px``. Raises :class:`CaseError` "no tissue
    found" on a blank slide.
    """
    if method not in TISSUE_METHODS:
        raise ValueError(f"method must be one of {TISSUE_METHODS}, got {method!r}")
    base_mpp = slide_mpp(slide, case_id, fallback_mpp)
    rgb = _thumbnail(slide, thumbnail_mpp / base_mpp, max_thumbnail_px)
    downsample = slide.dimensions[0] / rgb.shape[1]
    saturation = _saturation(rgb)
    threshold = max(_otsu(saturation), min_saturation) if method == "otsu" else min_saturation
    pixel_um2 = (downsample * base_mpp) ** 2
    mask = remove_small_objects(saturation > threshold, max_size=int(min_area_um2 / pixel_um2))
    mask = remove_small_holes(mask, max_size=int(max_hole_um2 / pixel_um2))
    if not mask.any():
        raise CaseError(case_id, f"no tissue found (no saturation above {threshold:.3f} over {min_area_um2:g} µm²)")
    return mask, float(downsample)


def _thumbnail(slide: openslide.OpenSlide, downsample: float, max_px: int) -> np.ndarray:
    """RGB thumbnail (H, W, 3) uint8 at ``downsample``, or coarser to fit ``max_px``."""
    width, height = slide.dimensions
    downsample = max(downsample, max(width, height) / max_px, 1.0)
    size = (max(1, round(width / downsample)), max(1, round(height / downsample)))
    return np.asarray(slide.get_thumbnail(size).convert("RGB"))


def _saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1] (0 for black), without HSV's float64 copies of the image."""
    high = rgb.max(axis=2).astype(np.float32)
    low = rgb.min(axis=2).astype(np.float32)
    return np.divide(high - low, high, out=np.zeros_like(high), where=high > 0)


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold; a constant image's single value (Otsu needs two)."""
    return float(threshold_otsu(values)) if values.min() < values.max() else float(values.max())


def tile_grid(
    slide: openslide.OpenSlide,
    case_id: str,
    *,
    mpp: float = 0.5,
    tile_size: int = 256,
    min_tissue_fraction: float = 0.5,
    fallback_mpp: float | None = None,
    tissue: tuple[np.ndarray, float] | None = None,
) -> TileGrid:
    """Non-overlapping ``tile_size`` tiles at ``mpp`` µm/px with ≥ ``min_tissue_fraction`` tissue.

    ``tissue`` is :func:`tissue_mask`'s ``(mask, downsample)``; computed with its
    defaults when not given. Raises :class:`CaseError` when the slide's resolution
    is coarser than ``mpp`` (upsampling would invent detail) or no tile has
    enough tissue.
    """
    base_mpp = slide_mpp(slide, case_id, fallback_mpp)
    if base_mpp > mpp * (1 + MPP_TOLERANCE):
        raise CaseError(case_id, f"slide is scanned at {base_mpp:.3f} µm/px, coarser than the requested {mpp} µm/px")
    mask, downsample = tissue if tissue is not None else tissue_mask(slide, case_id, fallback_mpp=fallback_mpp)
    extent = tile_size * mpp / base_mpp
    coords = _grid_coords(slide.dimensions, extent)
    fractions = _box_fractions(mask, coords / downsample, extent / downsample)
    coords = coords[fractions >= min_tissue_fraction]
    if len(coords) == 0:
        raise CaseError(
            case_id, f"no {tile_size}-px tile at {mpp} µm/px has at least {min_tissue_fraction:.0%} tissue"
        )
    level = slide.get_best_level_for_downsample(extent / tile_size)
    return TileGrid(
        case_id=case_id,
        coords=coords,
        tile_size_level0=float(extent),
        mpp=float(mpp),
        tile_size=int(tile_size),
        level=int(level),
        level_downsample=float(slide.level_downsamples[level]),
    )


def _grid_coords(dimensions: tuple[int, int], extent: float) -> np.ndarray:
    """Top-left level-0 (x, y) int64 of every whole tile of ``extent`` px, row by row."""
    width, height = dimensions
    xs = np.rint(np.arange(int(width // extent)) * extent).astype(np.int64)
    ys = np.rint(np.arange(int(height // extent)) * extent).astype(np.int64)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)


def _box_fractions(mask: np.ndarray, corners: np.ndarray, size: float) -> np.ndarray:
    """Fraction of ``mask`` set inside each square box (corner (x, y), side ``size``, mask pixels).

    Uses a summed-area table, so the cost does not grow with the box size.
    """
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int32)  # a 4096² mask fits
    table[1:, 1:] = mask.cumsum(axis=0, dtype=np.int32).cumsum(axis=1, dtype=np.int32)
    height, width = mask.shape
    x0 = np.clip(np.rint(corners[:, 0]).astype(np.int64), 0, width)
    y0 = np.clip(np.rint(corners[:, 1]).astype(np.int64), 0, height)
    # At least one mask pixel per box, even when a tile is smaller than a thumbnail pixel.
    x1 = np.clip(np.maximum(np.rint(corners[:, 0] + size).astype(np.int64), x0 + 1), 0, width)
    y1 = np.clip(np.maximum(np.rint(corners[:, 1] + size).astype(np.int64), y0 + 1), 0, height)
    inside = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    area = (x1 - x0) * (y1 - y0)
    return np.divide(inside, area, out=np.zeros(len(corners)), where=area > 0)


def read_tiles(slide: openslide.OpenSlide, grid: TileGrid, indices: np.ndarray) -> np.ndarray:
    """RGB tiles ``(len(indices), tile_size, tile_size, 3)`` uint8 for ``grid.coords[indices]``.

    Each tile is read from ``grid.level`` (the finest level no coarser than the
    target), composited onto white where transparent, and resized to
    ``tile_size`` with a Lanczos filter. Raises :class:`CaseError` when OpenSlide
    cannot read a region (a damaged slide).
    """
    region = max(1, round(grid.tile_size_level0 / grid.level_downsample))
    tiles = np.empty((len(indices), grid.tile_size, grid.tile_size, 3), dtype=np.uint8)
    for out, index in enumerate(indices):
        x, y = (int(v) for v in grid.coords[index])
        try:
            rgba = slide.read_region((x, y), grid.level, (region, region))
        except openslide.OpenSlideError as error:
            raise CaseError(grid.case_id, f"cannot read the tile at level-0 ({x}, {y}): {error}") from error
        tiles[out] = _to_rgb(rgba, grid.tile_size)
    return tiles


def _to_rgb(rgba: Image.Image, size: int) -> np.ndarray:
    """Composite an RGBA region onto white and resize it to ``size`` × ``size``."""
    rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(rgb)
