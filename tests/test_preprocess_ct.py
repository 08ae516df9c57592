import inspect
import locale
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from omegaconf import OmegaConf

from radiopath.data.readers import read_ct
from radiopath.errors import CaseError
from radiopath.config import CONF_DIR
from radiopath.preprocess.ct import (
    hu_window_normalise,
    largest_component,
    preprocess_ct,
    resample_isotropic,
    segvol_normalise,
)

CONF = CONF_DIR
SPACING = (0.8, 0.9, 2.5)
ORIGIN = (30.0, -12.0, 40.0)
DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # LPS-style flips: geometry must be honoured
TUMOUR_CENTRE_INDEX = (22.0, 18.0, 8.0)  # (x, y, z)
TUMOUR_RADIUS_MM = 6.0


def _on_grid(array: np.ndarray) -> sitk.Image:
    """An image of ``array`` (z, y, x) on the test grid."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    return image


def _physical_offsets(shape: tuple[int, int, int], centre_index) -> np.ndarray:
    """Distance in mm of every voxel (z, y, x) from a point given as an (x, y, z) index."""
    zz, yy, xx = np.indices(shape, dtype=np.float64)
    offsets = [(grid - c) * s for grid, c, s in zip((xx, yy, zz), centre_index, SPACING)]
    return np.sqrt(sum(o**2 for o in offsets))


def _case(shape=(16, 36, 40), centre_index=TUMOUR_CENTRE_INDEX, seed=0):
    """Synthetic int16 CT (air, soft-tissue body, enhancing tumour, noise) and its tumour mask."""
    rng = np.random.default_rng(seed)
    distance = _physical_offsets(shape, centre_index)
    y_mm = np.indices(shape)[1] * SPACING[1]
    body = np.abs(y_mm - y_mm.max() / 2) < 12  # a slab across the whole x and z range
    hu = np.where(body, 40.0, -1000.0)
    tumour = distance <= TUMOUR_RADIUS_MM
    hu[tumour] = 150.0
    hu += rng.normal(0, 10, shape)
    return _on_grid(hu.astype(np.int16)), _on_grid(tumour.astype(np.uint8))


def _centroid_mm(mask: sitk.Image) -> np.ndarray:
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(mask != 0, sitk.sitkUInt8))
    return np.array(stats.GetCentroid(1))


def _outer_corner(image: sitk.Image) -> np.ndarray:
    """Physical position of the outer corner of voxel (0, 0, 0)."""
    return np.array(image.TransformContinuousIndexToPhysicalPoint((-0.5, -0.5, -0.5)))


def _write_dicom_series(image: sitk.Image, folder: Path, series_uid: str) -> None:
    """Write ``image`` as one DICOM file per slice, with the tags a series reader sorts on."""
    folder.mkdir(exist_ok=True)
    saved_locale = locale.setlocale(locale.LC_ALL)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    orientation = "\\".join(str(v) for v in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7]))
    for z in range(image.GetDepth()):
        slice_ = image[:, :, z]
        tags = {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{z + 1}",
            "0020|0037": orientation,
            "0020|0032": "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, z))),
            "0020|0013": str(z + 1),
            "0018|0050": str(image.GetSpacing()[2]),
        }
        for tag, value in tags.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid}_{z:03d}.dcm"))
        writer.Execute(slice_)
    # GDCM's writer sets the process locale to "C": later tests would read text as ASCII.
    locale.setlocale(locale.LC_ALL, saved_locale)


def _assert_same_image(actual: sitk.Image, expected: sitk.Image) -> None:
    np.testing.assert_array_equal(sitk.GetArrayFromImage(actual), sitk.GetArrayFromImage(expected))
    np.testing.assert_allclose(actual.GetSpacing(), expected.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(actual.GetOrigin(), expected.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(actual.GetDirection(), expected.GetDirection(), atol=1e-6)


def test_nifti_nrrd_and_dicom_series_read_to_the_same_voxels_and_geometry(tmp_path):
    image, _ = _case()
    sitk.WriteImage(image, str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(image, str(tmp_path / "ct.nrrd"))
    _write_dicom_series(image, tmp_path / "dicom", "1.2.826.0.1.3680043.2.1125.7")
    for path in (tmp_path / "ct.nii.gz", tmp_path / "ct.nrrd", tmp_path / "dicom"):
        _assert_same_image(read_ct(path, "c1"), image)


def test_dicom_folder_with_two_series_reads_the_one_with_most_files(tmp_path):
    image, _ = _case()
    _write_dicom_series(image[:, :, :5], tmp_path, "1.2.826.0.1.3680043.2.1125.8")
    _write_dicom_series(image, tmp_path, "1.2.826.0.1.3680043.2.1125.9")
    assert read_ct(tmp_path, "c1").GetSize() == image.GetSize()


@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nii", "ct.nrrd"])
def test_truncated_ct_raises_case_error_naming_case_and_path(tmp_path, name):
    image, _ = _case()
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 3 // 4])
    with pytest.raises(CaseError) as caught:
        read_ct(path, "c7")
    assert caught.value.case_id == "c7"
    assert str(path) in caught.value.reason


def test_missing_empty_folder_and_unknown_format_raise_case_error(tmp_path):
    (tmp_path / "scan.png").write_bytes(b"\x89PNG")
    (tmp_path / "empty").mkdir()
    for path, words in [
        (tmp_path / "absent.nii.gz", "not found"),
        (tmp_path / "empty", "no DICOM series"),
        (tmp_path / "scan.png", "unsupported CT format"),
    ]:
        with pytest.raises(CaseError, match=words):
            read_ct(path, "c2")


def test_resampling_is_isotropic_and_keeps_extent_and_tumour_centroid():
    image, mask = _case()
    resampled, resampled_mask = resample_isotropic(image, mask, 1.0)
    assert resampled.GetSpacing() == (1.0, 1.0, 1.0)
    assert resampled.GetDirection() == image.GetDirection()
    assert resampled.GetPixelID() == sitk.sitkFloat32 and resampled_mask.GetPixelID() == sitk.sitkUInt8
    assert resampled_mask.GetSize() == resampled.GetSize()
    # Same physical extent: outer corners agree, lengths agree within one new voxel.
    np.testing.assert_allclose(_outer_corner(resampled), _outer_corner(image), atol=1e-6)
    lengths = np.array(image.GetSize()) * np.array(SPACING)
    assert np.all(np.abs(np.array(resampled.GetSize()) - lengths) <= 0.5)
    assert np.linalg.norm(_centroid_mm(resampled_mask) - _centroid_mm(mask)) < 0.5
    # B-spline keeps the tissue values: the tumour interior stays near 150 HU.
    inside = sitk.GetArrayFromImage(sitk.BinaryErode(resampled_mask, (2, 2, 2)))
    assert abs(sitk.GetArrayFromImage(resampled)[inside > 0].mean() - 150) < 5


def test_hu_window_maps_low_high_linearly_onto_zero_one_and_clips():
    image = sitk.GetImageFromArray(np.array([[[-1000, -500, -250, 0, 500, 1200]]], dtype=np.float32))
    values = sitk.GetArrayFromImage(hu_window_normalise(image, -500, 500)).ravel()
    np.testing.assert_allclose(values, [0, 0, 0.25, 0.5, 1, 1], atol=1e-6)


def test_segvol_normalisation_z_scores_the_foreground():
    image, _ = _case()
    raw = sitk.GetArrayFromImage(image).astype(np.float64)
    foreground = raw > raw.mean()
    values = sitk.GetArrayFromImage(segvol_normalise("c1", sitk.Cast(image, sitk.sitkFloat32)))
    assert values.dtype == np.float32
    assert abs(values[foreground].mean()) < 0.02
    assert abs(values[foreground].std() - 1) < 0.02
    # The definition itself, at a voxel inside the clipping range.
    mean, std = raw[foreground].mean(), raw[foreground].std()
    z, y, x = (int(v) for v in TUMOUR_CENTRE_INDEX[::-1])
    assert values[z, y, x] == pytest.approx((raw[z, y, x] - mean) / std, abs=1e-4)


def test_constant_ct_cannot_be_segvol_normalised():
    with pytest.raises(CaseError, match="constant"):
        segvol_normalise("c1", sitk.Image(4, 4, 4, sitk.sitkFloat32))


def _blobs(*boxes) -> sitk.Image:
    array = np.zeros((20, 20, 20), dtype=np.uint8)
    for z0, z1, y0, y1, x0, x1 in boxes:
        array[z0:z1, y0:y1, x0:x1] = 1
    return sitk.GetImageFromArray(array)


def test_largest_component_keeps_the_big_blob_and_counts_corner_contacts():
    big = (2, 8, 2, 8, 2, 8)
    corner_touching = (8, 9, 8, 9, 8, 9)  # touches `big` only at a corner: joined by 26-connectivity
    small = (14, 16, 14, 16, 14, 16)
    kept = sitk.GetArrayFromImage(largest_component("c1", _blobs(big, corner_touching, small), 100))
    assert kept.sum() == 6**3 + 1
    assert kept[15, 15, 15] == 0 and kept[8, 8, 8] == 1


def test_only_tiny_components_raise_case_error():
    with pytest.raises(CaseError, match="at least 100 voxels"):
        largest_component("c1", _blobs((2, 5, 2, 5, 2, 5), (10, 13, 10, 13, 10, 13)), 100)


def test_margin_crop_holds_tumour_plus_margin_at_true_physical_positions():
    image, mask = _case(shape=(24, 60, 60), centre_index=(30, 30, 12))
    prepared = preprocess_ct("c1", image, mask, margin_mm=5.0)
    assert prepared.image.GetPixelID() == sitk.sitkFloat32 and prepared.mask.GetPixelID() == sitk.sitkUInt8
    assert prepared.image.GetSpacing() == (1.0, 1.0, 1.0)
    crop_mask = prepared.mask_array()
    _, full_mask = resample_isotropic(image, sitk.Cast(mask, sitk.sitkUInt8), 1.0)
    assert crop_mask.sum() == sitk.GetArrayViewFromImage(full_mask).sum()  # the whole tumour
    zyx = np.argwhere(crop_mask)
    assert np.all(zyx.min(axis=0) >= 5) and np.all(np.array(crop_mask.shape) - 1 - zyx.max(axis=0) >= 5)
    centroid = prepared.index_to_mm(zyx.mean(axis=0))[0]
    assert np.linalg.norm(centroid - _centroid_mm(mask)) < 0.5
    values = prepared.image_array()
    assert values.min() >= 0 and values.max() <= 1
    assert values[crop_mask > 0].mean() == pytest.approx((150 + 500) / 1000, abs=0.02)


def test_fixed_crop_has_crop_size_and_pads_with_air_near_the_border():
    image, mask = _case(centre_index=(6, 18, 8))  # tumour close to the x = 0 face
    prepared = preprocess_ct("c1", image, mask, crop="fixed", crop_size=(32, 24, 16), min_component_voxels=50)
    values, crop_mask = prepared.image_array(), prepared.mask_array()
    assert values.shape == (16, 24, 32) and crop_mask.shape == (16, 24, 32)
    # The crop is the resampled, windowed volume shifted by whole voxels, padded with air (0) and mask 0.
    full, full_mask = resample_isotropic(image, mask, 1.0)
    full = sitk.GetArrayFromImage(hu_window_normalise(full, -500, 500))
    shift = np.rint(_continuous_index(full_mask, prepared.image.GetOrigin()))[::-1].astype(int)  # (z, y, x)
    assert shift[2] < 0  # the crop starts before the volume: there is padding to check
    pad = 40
    expected = np.pad(full, pad)[tuple(slice(pad + s, pad + s + n) for s, n in zip(shift, values.shape))]
    expected_mask = np.pad(sitk.GetArrayFromImage(full_mask), pad)[
        tuple(slice(pad + s, pad + s + n) for s, n in zip(shift, values.shape))
    ]
    np.testing.assert_allclose(values, expected, atol=1e-6)
    np.testing.assert_array_equal(crop_mask, expected_mask)
    assert np.all(values[:, 8:16, : -shift[2]] == 0)  # padding where the volume holds body tissue
    assert np.all(values[:, 8:16, -shift[2] :] > 0.4)
    crop_centroid = np.argwhere(crop_mask).mean(axis=0)
    assert np.all(np.abs(crop_centroid - (np.array(values.shape) - 1) / 2) <= 0.5)  # centred on the tumour
    assert np.linalg.norm(prepared.index_to_mm(crop_centroid)[0] - _centroid_mm(mask)) < 0.5


def _continuous_index(image: sitk.Image, point) -> np.ndarray:
    """Continuous (x, y, z) index of a physical point on ``image``'s grid."""
    return np.array(image.TransformPhysicalPointToContinuousIndex(point))


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda m: m.SetSpacing((0.8, 0.9, 3.0)), "spacing"),
        (lambda m: m.SetOrigin((30.0, -12.0, 41.0)), "origin"),
        (lambda m: m.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1)), "direction"),
    ],
)
def test_mask_geometry_mismatch_raises_case_error(change, words):
    image, mask = _case()
    change(mask)
    with pytest.raises(CaseError, match=f"mask geometry differs from image: {words}"):
        preprocess_ct("c3", image, mask)


def test_mask_size_mismatch_and_empty_mask_raise_case_error():
    image, mask = _case()
    with pytest.raises(CaseError, match=r"mask geometry differs from image: size \(40, 36, 16\) vs \(40, 36, 15\)"):
        preprocess_ct("c4", image, mask[:, :, :15])
    with pytest.raises(CaseError, match="tumour mask is empty"):
        preprocess_ct("c4", image, mask * 0)


def test_ct_config_keys_are_the_preprocess_keyword_arguments():
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "ct" / "default.yaml"), resolve=True)
    parameters = inspect.signature(preprocess_ct).parameters
    keyword_only = {name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(cfg) == keyword_only
    image, mask = _case()
    assert preprocess_ct("c1", image, mask, **cfg).mask_array().any()
