import numpy as np
import pytest
import torch

from radiopath.encoders.bags import load_features, write_bag
from radiopath.encoders.features import PatchFeatures
from radiopath.layout import bag_path, features_path


def test_round_trip_loads_with_weights_only(tmp_path):
    original = PatchFeatures(
        case_id="c1",
        modality="pathology",
        encoder="hipt",
        features=np.random.default_rng(0).normal(size=(5, 8)),
        coords=np.arange(10).reshape(5, 2),
        patch_size=(512, 512),
        level0_mpp=0.25,
    )
    path = features_path(tmp_path, "pathology", "hipt", "c1")
    original.save(path)
    raw = torch.load(path, weights_only=True)
    assert raw["coord_units"] == "level0_px" and raw["features"].dtype == torch.float32
    loaded = PatchFeatures.load(path)
    np.testing.assert_array_equal(loaded.features, original.features)
    np.testing.assert_array_equal(loaded.coords, original.coords)
    assert (loaded.case_id, loaded.modality, loaded.encoder) == ("c1", "pathology", "hipt")
    assert loaded.level0_mpp == 0.25


def test_rejects_nan_features_and_wrong_coordinate_dimensions():
    with pytest.raises(ValueError, match="NaN"):
        PatchFeatures("c", "radiology", "e", np.array([[np.nan]]), np.zeros((1, 3)), (1, 1, 1))
    with pytest.raises(ValueError, match="3-D positions"):
        PatchFeatures("c", "radiology", "e", np.zeros((2, 4)), np.zeros((2, 2)), (1, 1, 1))
    with pytest.raises(ValueError, match="level0_mpp"):
        PatchFeatures("c", "pathology", "e", np.zeros((2, 4)), np.zeros((2, 2)), (1, 1))


def test_units_and_checks_come_from_the_modality_table():
    ct = PatchFeatures("c", "radiology", "e", np.zeros((2, 4)), np.zeros((2, 3)), (1, 1, 1))
    assert ct.coord_units == "mm" and ct.level0_mpp is None  # CT needs no slide resolution
    with pytest.raises(ValueError, match="unknown modality 'dermatology'; choose from radiology, pathology"):
        PatchFeatures("c", "dermatology", "e", np.zeros((2, 4)), np.zeros((2, 2)), (1, 1))


def test_slide_features_round_trip_through_an_hdf5_bag(tmp_path):
    original = PatchFeatures("c1", "pathology", "uni", np.random.default_rng(1).normal(size=(6, 4)),
                             np.arange(12).reshape(6, 2) * 256, (256, 256), level0_mpp=0.5)
    path = bag_path(tmp_path, "pathology", "uni", "c1")
    write_bag(original, path, tile_size=256, tile_mpp=0.5)
    loaded = load_features(path)
    np.testing.assert_array_equal(loaded.features, original.features)
    np.testing.assert_array_equal(loaded.coords, original.coords)
    np.testing.assert_array_equal(loaded.patch_size, original.patch_size)
    assert (loaded.case_id, loaded.modality, loaded.encoder, loaded.level0_mpp) == ("c1", "pathology", "uni", 0.5)
    ct = PatchFeatures("c", "radiology", "e", np.zeros((2, 4)), np.zeros((2, 3)), (1, 1, 1))
    with pytest.raises(ValueError, match="radiology features have no HDF5 bag layout"):
        write_bag(ct, tmp_path / "c.h5", tile_size=1, tile_mpp=1.0)
