"""CT preprocessing with SimpleITK: from a CT and its tumour mask to a :class:`PreparedCT`.

:func:`preprocess_ct` chains small steps, each usable on its own: check that the
mask lies on the CT's grid, binarise it, resample both to isotropic voxels,
normalise intensities (HU window or SegVol's foreground scheme), keep the
largest tumour component, and crop around it. The result keeps true physical
geometry, so :meth:`PreparedCT.index_to_mm` gives scanner coordinates in mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from radiopath.errors import CaseError


@dataclass
class PreparedCT:
    """A preprocessed CT case: what every CT encoder receives.

    ``image`` is float32, isotropic, intensity-normalised and cropped around the
    tumour; ``mask`` is uint8 (1 = tumour, largest connected component) on exactly
    the same grid. Both keep their physical geometry (origin, spacing, direction).
    """

    case_id: str
    image: sitk.Image
    mask: sitk.Image

    def image_array(self) -> np.ndarray:
        """Image voxels as a float32 array in (z, y, x) order."""
        return sitk.GetArrayFromImage(self.image).astype(np.float32)

    def mask_array(self) -> np.ndarray:
        """Mask voxels as a uint8 array in (z, y, x) order."""
        return sitk.GetArrayFromImage(self.mask).astype(np.uint8)

    def index_to_mm(self, zyx: np.ndarray) -> np.ndarray:
        """Continuous voxel indices ``(N, 3)`` in (z, y, x) -> physical points ``(N, 3)`` in mm (x, y, z)."""
        zyx = np.asarray(zyx, dtype=np.float64).reshape(-1, 3)
        ijk = zyx[:, ::-1]  # SimpleITK indexes (x, y, z)
        direction = np.array(self.image.GetDirection()).reshape(3, 3)
        spacing = np.array(self.image.GetSpacing())
        origin = np.array(self.image.GetOrigin())
        return (origin + (ijk * spacing) @ direction.T).astype(np.float32)


GEOMETRY_TOLERANCE = 1e-3  # mm for spacing/origin, cosine units for direction
NORMALISATIONS = ("hu_window", "segvol")
CROPS = ("margin", "fixed")


def preprocess_ct(
    case_id: str,
    image: sitk.Image,
    mask: sitk.Image,
    *,
    spacing_mm: float = 1.0,
    normalisation: str = "hu_window",
    hu_window: Sequence[float] = (-500, 500),
    min_component_voxels: int = 100,
    crop: str = "margin",
    margin_mm: float = 10.0,
    crop_size: Sequence[int] = (64, 64, 64),
) -> PreparedCT:
    """Check, resample, normalise, keep the largest tumour component and crop one CT case.

    ``crop="margin"`` keeps the tumour's bounding box grown by ``margin_mm`` (clamped
    to the volume); ``crop="fixed"`` keeps ``crop_size`` voxels (x, y, z) centred on the
    tumour centroid, padding outside the volume with the normalised image's minimum
    (air) and mask 0. ``min_component_voxels`` counts voxels after resampling.
    Bad input raises :class:`CaseError`; unknown option values raise ``ValueError``.
    """
    _check_options(normalisation, hu_window, crop, crop_size)
    check_geometry(case_id, image, mask)
    mask = binarise(mask)
    check_not_empty(case_id, mask)
    image, mask = resample_isotropic(image, mask, spacing_mm)
    image = normalise_intensity(case_id, image, normalisation, hu_window)
    mask = largest_component(case_id, mask, min_component_voxels)
    if crop == "margin":
        image, mask = crop_margin(image, mask, margin_mm)
    else:
        air = float(sitk.GetArrayViewFromImage(image).min())
        image, mask = crop_fixed(image, mask, crop_size, pad_value=air)
    return PreparedCT(case_id=case_id, image=image, mask=mask)


def _check_options(normalisation: str, hu_window: Sequence[float], crop: str, crop_size: Sequence[int]) -> None:
    """Reject configuration mistakes before any work is done."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    if len(hu_window) != 2 or not hu_window[0] < hu_window[1]:
        raise ValueError(f"hu_window must be (low, high) with low < high, got {list(hu_window)}")
    if len(crop_size) != 3 or min(crop_size) < 1:
        raise ValueError(f"crop_size must be three positive voxel counts (x, y, z), got {list(crop_size)}")


def check_geometry(case_id: str, image: sitk.Image, mask: sitk.Image, tolerance: float = GEOMETRY_TOLERANCE) -> None:
    """Raise :class:`CaseError` unless ``mask`` lies on ``image``'s voxel grid."""
    differences = []
    if image.GetSize() != mask.GetSize():
        differences.append(f"size {image.GetSize()} vs {mask.GetSize()}")
    for name in ("Spacing", "Origin", "Direction"):
        ours, theirs = getattr(image, f"Get{name}")(), getattr(mask, f"Get{name}")()
        if len(ours) != len(theirs) or not np.allclose(ours, theirs, rtol=0, atol=tolerance):
            differences.append(f"{name.lower()} {_rounded(ours)} vs {_rounded(theirs)}")
    if differences:
        raise CaseError(case_id, "mask geometry differs from image: " + "; ".join(differences))


def _rounded(values: Sequence[float]) -> tuple[float, ...]:
    """Values rounded for a readable error message."""
    return tuple(round(float(v), 4) for v in values)


def binarise(mask: sitk.Image) -> sitk.Image:
    """uint8 mask: 1 wherever ``mask`` is non-zero (any label counts as tumour)."""
    return sitk.Cast(mask != 0, sitk.sitkUInt8)


def check_not_empty(case_id: str, mask: sitk.Image) -> None:
    """Raise :class:`CaseError` when the mask has no tumour voxel."""
    if not sitk.GetArrayViewFromImage(mask).any():
        raise CaseError(case_id, "tumour mask is empty")


def resample_isotropic(image: sitk.Image, mask: sitk.Image, spacing_mm: float) -> tuple[sitk.Image, sitk.Image]:
    """Resample image (B-spline, float32) and mask (nearest neighbour, uint8) to ``spacing_mm``.

    The output grid covers the same physical extent as the input: its first
    voxel's outer corner sits on the input's, so centroids do not shift by half
    a voxel. Voxels past the input (at most one, from rounding) get the image minimum.
    """
    spacing = np.array(image.GetSpacing())
    size = np.array(image.GetSize())
    new_spacing = np.full(3, float(spacing_mm))
    new_size = np.maximum(1, np.round(size * spacing / new_spacing)).astype(int)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    # Shift the first voxel centre so both grids start at the same outer corner.
    new_origin = np.array(image.GetOrigin()) + direction @ ((new_spacing - spacing) / 2)
    reference = sitk.Image([int(n) for n in new_size], sitk.sitkUInt8)
    reference.SetSpacing(new_spacing.tolist())
    reference.SetOrigin(new_origin.tolist())
    reference.SetDirection(image.GetDirection())
    image = sitk.Cast(image, sitk.sitkFloat32)
    air = float(sitk.GetArrayViewFromImage(image).min())
    resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkBSpline, air, sitk.sitkFloat32)
    resampled_mask = sitk.Resample(mask, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return resampled, resampled_mask


def normalise_intensity(case_id: str, image: sitk.Image, method: str, hu_window: Sequence[float]) -> sitk.Image:
    """Apply the ``hu_window`` or ``segvol`` normalisation (see those functions)."""
    if method == "hu_window":
        return hu_window_normalise(image, *hu_window)
    if method == "segvol":
        return segvol_normalise(case_id, image)
    raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {method!r}")


def hu_window_normalise(image: sitk.Image, low: float, high: float) -> sitk.Image:
    """Map HU ``[low, high]`` linearly onto ``[0, 1]``, clipping outside, as float32."""
    return sitk.IntensityWindowing(sitk.Cast(image, sitk.sitkFloat32), float(low), float(high), 0.0, 1.0)


def segvol_normalise(case_id: str, image: sitk.Image) -> sitk.Image:
    """SegVol's foreground normalisation, as float32.

    Foreground = voxels above the volume mean. The whole volume is clipped to the
    0.05th-99.95th percentiles of the foreground, then z-scored with the mean and
    standard deviation of the (unclipped) foreground. SegVol's own pipeline then
    min-max scales to [0, 1]; that step is left to the encoder.
    """
    values = sitk.GetArrayViewFromImage(image).astype(np.float32)
    foreground = values[values > values.mean()]
    if foreground.size == 0:
        raise CaseError(case_id, "CT intensities are constant: no foreground for SegVol normalisation")
    low, high = np.percentile(foreground, [0.05, 99.95])
    normalised = (np.clip(values, low, high) - foreground.mean()) / max(float(foreground.std()), 1e-8)
    return _like(normalised, image)


def _like(values: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A float32 image of ``values`` with ``reference``'s geometry."""
    image = sitk.GetImageFromArray(values.astype(np.float32, copy=False))
    image.CopyInformation(reference)
    return image


def largest_component(case_id: str, mask: sitk.Image, min_voxels: int) -> sitk.Image:
    """Keep the largest 26-connected component; :class:`CaseError` if it has < ``min_voxels``."""
    relabel = sitk.RelabelComponentImageFilter()
    relabel.SortByObjectSizeOn()
    labels = relabel.Execute(sitk.ConnectedComponent(mask, True))
    sizes = relabel.GetSizeOfObjectsInPixels()
    if not sizes or sizes[0] < min_voxels:
        largest = sizes[0] if sizes else 0
        raise CaseError(
            case_id,
            f"no tumour component of at least {min_voxels} voxels after resampling (largest has {largest})",
        )
    return sitk.Cast(labels == 1, sitk.sitkUInt8)


def crop_margin(image: sitk.Image, mask: sitk.Image, margin_mm: float) -> tuple[sitk.Image, sitk.Image]:
    """Crop both to the tumour bounding box grown by ``margin_mm``, clamped to the volume."""
    start, extent = _bounding_box(mask)
    grow = np.ceil(margin_mm / np.array(mask.GetSpacing())).astype(int)
    low = np.maximum(start - grow, 0)
    high = np.minimum(start + extent + grow, np.array(mask.GetSize()))
    size, index = [int(v) for v in high - low], [int(v) for v in low]
    return sitk.RegionOfInterest(image, size, index), sitk.RegionOfInterest(mask, size, index)


def _bounding_box(mask: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Start index and size (x, y, z) of the mask's label-1 bounding box."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    box = np.array(stats.GetBoundingBox(1))
    return box[:3], box[3:]


def crop_fixed(
    image: sitk.Image, mask: sitk.Image, crop_size: Sequence[int], pad_value: float
) -> tuple[sitk.Image, sitk.Image]:
    """Cut ``crop_size`` voxels (x, y, z) centred on the tumour centroid.

    Voxels outside the volume get ``pad_value`` in the image and 0 in the mask.
    """
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    centre = np.array(mask.TransformPhysicalPointToContinuousIndex(stats.GetCentroid(1)))
    size = np.array(crop_size, dtype=int)
    start = np.round(centre - (size - 1) / 2).astype(int)
    reference = sitk.Image([int(n) for n in size], sitk.sitkUInt8)
    reference.SetSpacing(image.GetSpacing())
    reference.SetDirection(image.GetDirection())
    reference.SetOrigin(image.TransformContinuousIndexToPhysicalPoint([float(i) for i in start]))
    # The crop grid is an integer shift of the input grid: nearest neighbour copies voxels exactly.
    cropped = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, pad_value, sitk.sitkFloat32)
    cropped_mask = sitk.Resample(mask, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return cropped, cropped_mask
