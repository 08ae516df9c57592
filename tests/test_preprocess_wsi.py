import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tifffile
from omegaconf import OmegaConf
from skimage.transform import downscale_local_mean

from radiopath.data.pyramid_tiff import write_pyramidal_tiff
from radiopath.data.readers import open_slide, slide_mpp
from radiopath.errors import CaseError
from radiopath.preprocess.wsi import read_tiles, tile_grid, tissue_mask
from radiopath.config import CONF_DIR

CONF = CONF_DIR
SLIDE_MPP = 0.5
HEIGHT, WIDTH = 1536, 2048
SPECK = (slice(208, 256), slice(1808, 1856))  # 24 µm dust, 3x3 thumbnail pixels: far below min_area_um2


def _tissue_truth() -> np.ndarray:
    """Level-0 truth: an ellipse of tissue."""
    yy, xx = np.indices((HEIGHT, WIDTH))
    return ((xx - 900) / 700) ** 2 + ((yy - 800) / 520) ** 2 <= 1


def _slide_pixels(seed: int = 0) -> np.ndarray:
    """White glass with noise, pink tissue with blue 32-px stripes, and one speck of dust."""
    rng = np.random.default_rng(seed)
    rgb = np.full((HEIGHT, WIDTH, 3), 245.0) + rng.normal(0, 2, (HEIGHT, WIDTH, 3))
    tissue = _tissue_truth()
    stripes = (np.indices((HEIGHT, WIDTH))[1] // 32) % 2 == 1
    rgb[tissue] = (225, 150, 190)
    rgb[tissue & stripes] = (90, 70, 160)
    rgb[SPECK] = (200, 90, 150)
    return np.clip(rgb, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """Paths of a tissue slide, a blank slide, and the tissue slide's pixels."""
    folder = tmp_path_factory.mktemp("slides")
    pixels = _slide_pixels()
    write_pyramidal_tiff(folder / "tissue.tiff", pixels, SLIDE_MPP)
    blank = np.clip(245 + np.random.default_rng(1).normal(0, 2, (512, 512, 3)), 0, 255).astype(np.uint8)
    write_pyramidal_tiff(folder / "blank.tiff", blank, SLIDE_MPP, downsamples=(1, 4))
    return {"tissue": folder / "tissue.tiff", "blank": folder / "blank.tiff", "pixels": pixels}


@pytest.fixture
def slide(slides):
    with open_slide(slides["tissue"], "s1") as handle:
        yield handle


def test_tissue_mask_finds_the_drawn_tissue_and_drops_dust(slide):
    mask, downsample = tissue_mask(slide, "s1")
    assert downsample == pytest.approx(16.0)  # 8 µm/px thumbnail of a 0.5 µm/px slide
    assert mask.dtype == bool and mask.shape == (HEIGHT // 16, WIDTH // 16)
    truth = downscale_local_mean(_tissue_truth().astype(float), (16, 16)) >= 0.5
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.95
    assert not mask[SPECK[0].start // 16 : SPECK[0].stop // 16, SPECK[1].start // 16 : SPECK[1].stop // 16].any()


def test_blank_slide_raises_no_tissue_found(slides):
    with open_slide(slides["blank"], "s2") as slide, pytest.raises(CaseError, match="no tissue found") as caught:
        tissue_mask(slide, "s2")
    assert caught.value.case_id == "s2"


def test_tile_coords_are_level0_pixels_on_tissue(slide):
    grid = tile_grid(slide, "s1", mpp=1.0, tile_size=64, min_tissue_fraction=0.5)
    assert grid.tile_size_level0 == pytest.approx(128.0)  # 64 px at 1 µm/px = 128 px at 0.5 µm/px
    assert grid.coords.dtype == np.int64 and grid.coords.shape[1] == 2
    assert np.all(grid.coords % 128 == 0)
    assert np.all(grid.coords[:, 0] + 128 <= WIDTH) and np.all(grid.coords[:, 1] + 128 <= HEIGHT)
    truth = _tissue_truth()
    fractions = np.array([truth[y : y + 128, x : x + 128].mean() for x, y in grid.coords])
    assert fractions.min() > 0.3  # thumbnail resolution blurs the border a little
    assert fractions.mean() > 0.9
    # Every tile wholly inside the tissue is kept.
    all_tiles = [(x, y) for y in range(0, HEIGHT - 127, 128) for x in range(0, WIDTH - 127, 128)]
    inside = {(x, y) for x, y in all_tiles if truth[y : y + 128, x : x + 128].all()}
    assert inside <= {tuple(c) for c in grid.coords.tolist()}


def test_tile_grid_rejects_upsampling_and_tissue_free_thresholds(slide):
    with pytest.raises(CaseError, match="coarser than the requested 0.25"):
        tile_grid(slide, "s1", mpp=0.25)
    mask = np.zeros((HEIGHT // 16, WIDTH // 16), dtype=bool)
    with pytest.raises(CaseError, match="no 64-px tile"):
        tile_grid(slide, "s1", mpp=1.0, tile_size=64, tissue=(mask, 16.0))


@pytest.mark.parametrize("mpp, level", [(1.0, 0), (2.0, 1)])
def test_read_tiles_uses_the_right_level_and_returns_the_drawn_pattern(slides, slide, mpp, level):
    grid = tile_grid(slide, "s1", mpp=mpp, tile_size=64)
    assert grid.level == level  # the finest level no coarser than mpp (levels at 1x, 4x, 16x)
    factor = int(mpp / SLIDE_MPP)
    indices = np.arange(0, len(grid.coords), max(1, len(grid.coords) // 6))
    tiles = read_tiles(slide, grid, indices)
    assert tiles.shape == (len(indices), 64, 64, 3) and tiles.dtype == np.uint8
    for tile, (x, y) in zip(tiles, grid.coords[indices]):
        region = slides["pixels"][y : y + 64 * factor, x : x + 64 * factor].astype(float)
        expected = downscale_local_mean(region, (factor, factor, 1))
        assert np.abs(tile - expected).mean() < 2


def test_read_tiles_composites_transparency_onto_white(slide):
    grid = tile_grid(slide, "s1", mpp=1.0, tile_size=64)
    beyond = dataclasses.replace(grid, coords=np.array([[WIDTH - 64, 0]]))
    tile = read_tiles(slide, beyond, [0])[0]
    # Only the left half lies on the slide; OpenSlide returns the right half transparent.
    assert np.all(tile[:, 36:] == 255)
    assert tile[:, :28].mean() < 250


def test_slide_mpp_uses_fallback_only_when_the_slide_has_none(tmp_path, slide):
    assert slide_mpp(slide, "s1", fallback=0.25) == pytest.approx(SLIDE_MPP)
    path = tmp_path / "no_mpp.tiff"
    tifffile.imwrite(path, np.full((512, 512, 3), 200, np.uint8), photometric="rgb", tile=(256, 256))
    with open_slide(path, "s3") as bare:
        assert slide_mpp(bare, "s3", fallback=0.25) == 0.25
        with pytest.raises(CaseError, match="openslide.mpp-x"):
            slide_mpp(bare, "s3")


def test_missing_corrupt_or_truncated_slide_raises_case_error(tmp_path, slides):
    garbage = tmp_path / "broken.svs"
    garbage.write_bytes(b"not a slide" * 100)
    truncated = tmp_path / "truncated.tiff"
    truncated.write_bytes(slides["tissue"].read_bytes()[:500_000])
    for path, words in [
        (tmp_path / "absent.svs", "slide not found"),
        (garbage, "cannot open slide"),
        (truncated, "cannot open slide"),
    ]:
        with pytest.raises(CaseError, match=words) as caught:
            open_slide(path, "s4")
        assert caught.value.case_id == "s4" and str(path) in caught.value.reason


def test_damaged_tile_data_raises_case_error_on_reading(tmp_path, slides):
    data = bytearray(slides["tissue"].read_bytes())
    damaged = tmp_path / "damaged.tiff"
    start, end = len(data) // 10, len(data) * 6 // 10  # level-0 tile data, not the page headers
    data[start:end] = bytes(end - start)
    damaged.write_bytes(bytes(data))
    everywhere = (np.ones((HEIGHT // 16, WIDTH // 16), dtype=bool), 16.0)
    with open_slide(damaged, "s5") as slide:
        grid = tile_grid(slide, "s5", mpp=0.5, tile_size=256, tissue=everywhere)
        with pytest.raises(CaseError, match="cannot read the tile at level-0") as caught:
            read_tiles(slide, grid, np.arange(len(grid.coords)))
    assert caught.value.case_id == "s5"


def test_wsi_config_maps_onto_tissue_mask_and_tile_grid(slide):
    cfg = OmegaConf.load(CONF / "wsi" / "default.yaml")
    cfg.fallback_mpp = 0.3
    tissue = OmegaConf.to_container(cfg.tissue, resolve=True)
    tiling = OmegaConf.to_container(cfg.tiling, resolve=True)
    assert tissue["fallback_mpp"] == 0.3 and tiling["fallback_mpp"] == 0.3
    mask, downsample = tissue_mask(slide, "s1", **tissue)
    grid = tile_grid(slide, "s1", tissue=(mask, downsample), **tiling)
    assert grid.tile_size == 256 and grid.mpp == 0.5 and len(grid.coords) > 0


def test_tiles_at_the_scan_resolution_are_the_level0_pixels(slides, slide):
    grid = tile_grid(slide, "s1", mpp=SLIDE_MPP, tile_size=64)
    picked = [0, len(grid.coords) - 1]
    for tile, (x, y) in zip(read_tiles(slide, grid, picked), grid.coords[picked]):
        np.testing.assert_array_equal(tile, slides["pixels"][y : y + 64, x : x + 64])
