"""The pathomics encoder: hand-crafted H&E tile features by name, in documented units."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from radiopath.data import demo_cohort as dc
from radiopath.encoders import ENCODERS
from radiopath.encoders.pathomics import FEATURE_NAMES

MPP = 0.5
SIZE = 128  # px: 64 µm tiles
HAEMATOXYLIN = np.array([0.5626, 0.7201, 0.4062])
EOSIN = np.array([0.2159, 0.8012, 0.5581])


def he_tile(*, grid: int, radius_um: float = 3.0, nucleus_od: float = 1.0, eosin_od: float = 0.45) -> np.ndarray:
    """A Beer-Lambert H&E tile: eosin everywhere, ``grid`` x ``grid`` separated round nuclei."""
    y, x = np.mgrid[:SIZE, :SIZE] + 0.5
    nuclei = np.zeros((SIZE, SIZE))
    step = SIZE / grid
    for cy in (np.arange(grid) + 0.5) * step:
        for cx in (np.arange(grid) + 0.5) * step:
            nuclei[np.hypot(y - cy, x - cx) <= radius_um / MPP] = nucleus_od
    od = eosin_od * EOSIN + nuclei[..., None] * HAEMATOXYLIN
    return np.clip(255 * np.exp(-od), 0, 255).astype(np.uint8)


def features(*tiles: np.ndarray) -> list[dict[str, float]]:
    out = ENCODERS.create("pathomics", mpp=MPP).encode_tiles(np.stack(tiles))
    return [dict(zip(FEATURE_NAMES, row)) for row in out]


def test_feature_names_shape_and_dtype():
    encoder = ENCODERS.create("pathomics")
    out = encoder.encode_tiles(np.stack([he_tile(grid=3), he_tile(grid=5)]))
    assert out.shape == (2, len(FEATURE_NAMES)) and out.dtype == np.float32
    assert encoder.embed_dim == len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) == 22
    assert encoder.feature_names == FEATURE_NAMES and encoder.name == "pathomics"
    assert np.isfinite(out).all()


def test_nuclei_are_counted_and_measured_in_physical_units():
    (tile,) = features(he_tile(grid=5, radius_um=3.0))
    assert tile["tissue_fraction"] == pytest.approx(1.0)
    assert tile["nuclear_density"] == pytest.approx(25 * 1000 / (SIZE * MPP) ** 2)  # per 1000 µm²
    assert tile["nucleus_diameter_mean"] == pytest.approx(6.0, rel=0.05)  # µm
    assert tile["nucleus_diameter_sd"] < 0.1
    assert tile["nuclear_fraction"] == pytest.approx(25 * np.pi * 3.0**2 / (SIZE * MPP) ** 2, rel=0.1)
    assert tile["nucleus_h_mean"] == pytest.approx(1.0, abs=0.05)
    assert tile["e_p50"] == pytest.approx(0.45, abs=0.02)


def test_denser_larger_and_darker_nuclei_raise_their_features():
    base, denser, larger, darker = features(
        he_tile(grid=3), he_tile(grid=5), he_tile(grid=3, radius_um=4.5), he_tile(grid=3, nucleus_od=1.5)
    )
    assert denser["nuclear_density"] > 2 * base["nuclear_density"]
    assert denser["nuclear_fraction"] > base["nuclear_fraction"]
    assert larger["nucleus_diameter_mean"] > 1.3 * base["nucleus_diameter_mean"]
    assert darker["nucleus_h_mean"] > 1.3 * base["nucleus_h_mean"]
    assert darker["h_mean"] > base["h_mean"] and darker["h_sd"] > base["h_sd"]
    assert darker["nuclear_density"] == base["nuclear_density"]


def test_blank_white_tile_gives_zeros():
    blank = np.full((SIZE, SIZE, 3), 255, np.uint8)
    (tile,) = features(blank)
    assert all(np.isfinite(value) for value in tile.values())
    assert all(value == 0 for value in tile.values())


def test_tiles_do_not_influence_each_other_and_runs_repeat():
    rng = np.random.default_rng(0)
    tiles = np.stack([he_tile(grid=3), rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), he_tile(grid=5)])
    encoder = ENCODERS.create("pathomics")
    batch = encoder.encode_tiles(tiles)
    one_by_one = np.concatenate([encoder.encode_tiles(tile[None]) for tile in tiles])
    np.testing.assert_allclose(batch, one_by_one, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(batch, ENCODERS.create("pathomics").encode_tiles(tiles))


def test_registered_and_configured_as_the_default_pathology_encoder(compose_config):
    assert "pathomics" in ENCODERS
    cfg = compose_config("encode", ["wsi.tiling.mpp=0.25"])
    assert cfg.encoder.pathology.name == "pathomics"
    encoder = ENCODERS.create(cfg.encoder.pathology.name, checkpoint=cfg.encoder.pathology.checkpoint,
                            **cfg.encoder.pathology.kwargs)
    assert encoder.mpp == 0.25  # the tiles' resolution, from the tiling config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"checkpoint": "weights.pt"}, "no weights"), ({"tissue_od": -1.0}, "tissue_od"),
     ({"glcm_levels": 1}, "glcm_levels"), ({"eosin_rgb": [0, 0, 0]}, "eosin_rgb"), ({"mpp": 0}, "mpp")],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ENCODERS.create("pathomics", **kwargs)


def test_planted_high_grade_tiles_of_a_demo_slide_stand_out():
    cfg = dc.demo_config(wsi={"size_px": [1536, 1536]}, wsi_pattern={"radius_um": [100.0, 150.0]})
    design = dc.PatientDesign("p", z=0.0, malignant=True, age=60, sex="M", n_ct_regions=0, n_wsi_regions=3,
                              ct_severity=0.0, wsi_severity=0.5)  # the mildest pattern
    slide = dc.render_slide(np.random.default_rng(1), design, cfg)
    factor = cfg.wsi.work_downsample  # the masks' downsample
    tiles, planted = [], []
    for y in range(0, slide.rgb.shape[0], SIZE):
        for x in range(0, slide.rgb.shape[1], SIZE):
            box = (slice(y // factor, (y + SIZE) // factor), slice(x // factor, (x + SIZE) // factor))
            tissue, fraction = slide.tissue[box].mean(), slide.pattern[box].mean()
            if tissue >= 0.5 and fraction in (0, 1):
                tiles.append(slide.rgb[y:y + SIZE, x:x + SIZE])
                planted.append(fraction == 1)
    assert sum(planted) >= 5 and len(planted) - sum(planted) >= 20
    found = features(*tiles)
    for name in ("h_mean", "nucleus_h_mean", "nuclear_fraction"):
        assert roc_auc_score(planted, [tile[name] for tile in found]) >= 0.9, name
