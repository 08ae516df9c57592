import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from omegaconf import OmegaConf
from radiomics import featureextractor, firstorder

from radiopath.encoders.radiomics import radiomics_maps, radiomics_scalar
from radiopath.errors import CaseError
from radiopath.preprocess.ct import PreparedCT
from radiopath.config import CONF_DIR

CONF = CONF_DIR / "encoder" / "radiology"
SIZE, CENTRE, RADIUS = 20, 10, 6
ORIGIN = (-30.0, 12.0, 5.0)


def synthetic_ct(case_id="case-1", image_array=None, mask_array=None) -> PreparedCT:
    """1 mm iso CT in [0, 1]: a sphere whose x >= centre half is brighter and textured."""
    rng = np.random.default_rng(7)
    z, y, x = np.mgrid[:SIZE, :SIZE, :SIZE]
    sphere = (z - CENTRE) ** 2 + (y - CENTRE) ** 2 + (x - CENTRE) ** 2 <= RADIUS**2
    if image_array is None:
        bright = x >= CENTRE
        noise = rng.standard_normal(sphere.shape)
        image_array = np.where(bright, 0.7 + 0.15 * noise, 0.3 + 0.02 * noise)
        image_array = np.where(sphere, image_array, 0.1 * rng.random(sphere.shape))
    if mask_array is None:
        mask_array = sphere
    image = sitk.GetImageFromArray(np.clip(image_array, 0, 1).astype(np.float32))
    image.SetOrigin(ORIGIN)
    mask = sitk.GetImageFromArray(np.asarray(mask_array, dtype=np.uint8))
    mask.CopyInformation(image)
    return PreparedCT(case_id, image, mask)


def voxel_mm(ct: PreparedCT) -> np.ndarray:
    """Physical centres (N, 3) of the mask voxels, straight from SimpleITK."""
    zyx = np.argwhere(ct.mask_array() == 1)
    return np.array([ct.image.TransformIndexToPhysicalPoint([int(i) for i in v[::-1]]) for v in zyx])


def test_scalar_gives_one_finite_vector_with_stable_names_at_the_centroid():
    ct = synthetic_ct()
    encoder = radiomics_scalar()
    features, coords = encoder.encode(ct)
    assert features.shape == (1, encoder.embed_dim) == (1, len(encoder.feature_names))
    assert features.dtype == np.float32 and np.isfinite(features).all()
    assert encoder.feature_names == radiomics_scalar().feature_names
    assert "original_shape_VoxelVolume" in encoder.feature_names
    assert "original_glcm_SumAverage" not in encoder.feature_names
    shape_stats = sitk.LabelShapeStatisticsImageFilter()
    shape_stats.Execute(ct.mask)
    np.testing.assert_allclose(coords[0], shape_stats.GetCentroid(1), atol=1e-4)
    direct = featureextractor.RadiomicsFeatureExtractor(binCount=32)
    direct.disableAllFeatures()
    direct.enableFeaturesByName(firstorder=["Entropy"])
    expected = float(direct.execute(ct.image, ct.mask)["original_firstorder_Entropy"])
    assert features[0, encoder.feature_names.index("original_firstorder_Entropy")] == pytest.approx(expected, rel=1e-5)


def test_scalar_names_cover_filtered_images():
    encoder = radiomics_scalar(
        features={"firstorder": ["Mean"]}, image_types=["Original", "Wavelet", "LoG"], log_sigma=[1.0]
    )
    features, _ = encoder.encode(synthetic_ct())
    assert features.shape == (1, 10)  # original + 8 wavelet bands + 1 LoG
    assert encoder.feature_names[0] == "original_firstorder_Mean"
    assert {"wavelet-HHH_firstorder_Mean", "log-sigma-1-0-mm-3D_firstorder_Mean"} <= set(encoder.feature_names)


def test_scalar_filter_the_case_is_too_small_for_is_a_case_error():
    encoder = radiomics_scalar(features={"firstorder": ["Mean"]}, image_types=["LoG"], log_sigma=[25.0])
    with pytest.raises(CaseError, match="case-1"):
        encoder.encode(synthetic_ct())


def test_maps_give_one_row_per_tumour_voxel_inside_the_mask_and_separate_the_halves():
    ct = synthetic_ct()
    encoder = radiomics_maps(stride=1)
    features, coords = encoder.encode(ct)
    assert features.shape == (int(ct.mask_array().sum()), encoder.embed_dim)
    assert coords.shape == (len(features), 3) and features.dtype == coords.dtype == np.float32
    physical = voxel_mm(ct)
    assert (coords >= physical.min(axis=0) - 1e-4).all() and (coords <= physical.max(axis=0) + 1e-4).all()
    centre_x = ORIGIN[0] + CENTRE
    bright, dark = coords[:, 0] > centre_x + 1, coords[:, 0] < centre_x - 1
    for name in ("original_firstorder_Mean", "original_firstorder_Variance"):
        column = features[:, encoder.feature_names.index(name)]
        assert column[bright].mean() > column[dark].mean()


def test_stride_keeps_the_grid_voxels_with_unchanged_values(monkeypatch):
    ct = synthetic_ct()
    full_features, full_coords = radiomics_maps(stride=1).encode(ct)
    computed = []
    mean = firstorder.RadiomicsFirstOrder.getMeanFeatureValue

    def counting_mean(self):
        computed.append(len(self.targetVoxelArray))
        return mean(self)

    monkeypatch.setattr(firstorder.RadiomicsFirstOrder, "getMeanFeatureValue", counting_mean)
    features, coords = radiomics_maps(stride=2).encode(ct)
    on_grid = (np.argwhere(ct.mask_array() == 1) % 2 == 0).all(axis=1)
    assert len(features) == on_grid.sum() == sum(computed) < len(full_features) / 6  # only kept voxels are computed
    # Same kernels at the kept voxels: the stride only chooses where to compute.
    rows = [np.flatnonzero(np.abs(full_coords - point).max(axis=1) < 1e-3)[0] for point in coords]
    np.testing.assert_allclose(features, full_features[rows], rtol=1e-6)


def test_maps_agree_with_pyradiomics_voxel_based_extraction():
    ct = synthetic_ct()
    encoder = radiomics_maps(stride=3, kernel_radius=2)
    features, coords = encoder.encode(ct)
    direct = featureextractor.RadiomicsFeatureExtractor(binCount=16, kernelRadius=2, maskedKernel=True)
    direct.disableAllFeatures()
    direct.enableFeaturesByName(
        firstorder=["Mean", "Variance", "Entropy", "10Percentile", "90Percentile"], glcm=["Contrast", "JointEnergy"]
    )
    maps = direct.execute(ct.image, ct.mask, voxelBased=True)
    for column, name in enumerate(encoder.feature_names):
        indices = [maps[name].TransformPhysicalPointToIndex([float(c) for c in point]) for point in coords]
        values = [maps[name].GetPixel(index) for index in indices]
        np.testing.assert_allclose(features[:, column], values, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("build", [radiomics_scalar, radiomics_maps])
def test_empty_mask_is_a_case_error(build):
    with pytest.raises(CaseError, match="case-empty"):
        build().encode(synthetic_ct("case-empty", mask_array=np.zeros((SIZE,) * 3)))


def test_maps_non_finite_image_is_a_case_error():
    image = np.full((SIZE,) * 3, np.nan)
    with pytest.raises(CaseError, match="case-nan"):
        radiomics_maps().encode(synthetic_ct("case-nan", image_array=image))


def test_maps_drop_and_report_voxels_with_non_finite_features(monkeypatch, caplog):
    def mean_with_holes(self):
        values = np.nanmean(self.targetVoxelArray, axis=1)
        values[::2] = np.nan
        return values

    ct = synthetic_ct()
    monkeypatch.setattr(firstorder.RadiomicsFirstOrder, "getMeanFeatureValue", mean_with_holes)
    with caplog.at_level(logging.WARNING, logger="radiopath.encoders.radiomics"):
        features, coords = radiomics_maps(stride=1).encode(ct)
    total = int(ct.mask_array().sum())
    assert len(features) == len(coords) == total // 2 and np.isfinite(features).all()
    assert f"dropped {total - total // 2} of {total}" in caplog.text


def test_maps_all_non_finite_features_are_a_case_error(monkeypatch):
    def infinite_mean(self):
        return np.full(len(self.targetVoxelArray), np.inf)

    monkeypatch.setattr(firstorder.RadiomicsFirstOrder, "getMeanFeatureValue", infinite_mean)
    with pytest.raises(CaseError, match="case-1.*all"):
        radiomics_maps().encode(synthetic_ct())


@pytest.mark.parametrize(
    "config, builder", [("radiomics_maps.yaml", radiomics_maps), ("radiomics_scalar.yaml", radiomics_scalar)]
)
def test_configs_build_the_default_encoders(config, builder):
    cfg = OmegaConf.load(CONF / config)
    encoder = builder(checkpoint=cfg.checkpoint, **cfg.kwargs)  # as ENCODERS.create calls it
    assert encoder.name == cfg.name
    assert encoder.feature_names == builder().feature_names
    with pytest.raises(ValueError, match="no weights"):
        builder(checkpoint="weights.pt", **cfg.kwargs)
