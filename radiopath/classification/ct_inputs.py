"""CT cases -> the arrays the deep classification pipelines train on, cached on disk.

Every input starts from :func:`radiopath.preprocess.ct.preprocess_ct` (isotropic
resampling, HU window mapped to [0, 1], largest 26-connected tumour component, crop)
on volumes read by :func:`radiopath.data.readers.read_ct`:

- :func:`tumour_volume`: a fixed crop around the tumour centroid with the CT as
  channel 0 and pyradiomics voxel-based feature maps as further channels (RGCNN).
- :func:`scalar_radiomics`: whole-tumour pyradiomics features on a margin crop (TR).
- :func:`tumour_values`: whole-tumour values of voxel-map features on the RGCNN's crop, which
  the RGCNN ranks on its training cases to choose its maps.
- :func:`tumour_slices`: axial slices of a fixed crop through the tumour (SimCLR,
  multi-phase CNN).

None of these is fitted to a cohort: a case's arrays depend only on its files and the
settings, so they are cached per case under ``cache_dir/{kind}/``, keyed by a hash of
the settings and of each input file's path, size and modification time. Changing a
setting or a file recomputes; ``cache_dir=None`` disables the cache.

:func:`prepare_inputs` computes several inputs of one case together: inside it the CT is
read, resampled and normalised once per spacing and window, whatever crops the inputs
cut from it, and inputs already in their cache (or without one) are skipped (:func:`pending`).
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from radiopath.classification.sharing import fresh_dict
from radiopath.data.readers import read_ct
from radiopath.encoders.radiomics import radiomics_maps, radiomics_scalar
from radiopath.errors import CaseError
from radiopath.io import atomic_write
from radiopath.preprocess.ct import PreparedCT, crop_fixed, crop_margin, preprocess_ct

# Five voxel-based maps: local intensity level, spread and disorder plus two GLCM textures.
DEFAULT_MAP_FEATURES = {"firstorder": ["Mean", "Variance", "Entropy"], "glcm": ["Contrast", "JointEnergy"]}

# The paper's TR set keeps GLCM SumAverage (conf/classify/radiomics/features/all.yaml), about which
# pyradiomics warns once per image and case; the duplicate is known and wanted, the warning is noise.
logging.getLogger("radiomics.glcm").addFilter(
    lambda record: "Sum Average = 2 * Joint Average" not in record.getMessage())


def prepare_case(
    row: Mapping,
    column: str = "ct",
    *,
    spacing_mm: float = 1.0,
    hu_window: Sequence[float] = (-500, 500),
    crop: str = "fixed",
    crop_size: Sequence[int] = (64, 64, 64),
    margin_mm: float = 10.0,
    min_component_voxels: int = 100,
) -> PreparedCT:
    """Read the ``column`` image and the mask of one manifest row and preprocess them.

    The same as :func:`radiopath.preprocess.ct.preprocess_ct` with these settings: the
    whole isotropic volume (:func:`_isotropic`, shared inside :func:`prepare_inputs`)
    is cut like ``preprocess_ct`` cuts it.
    """
    if crop not in ("margin", "fixed"):
        raise ValueError(f"crop must be 'margin' or 'fixed', got {crop!r}")
    if len(crop_size) != 3 or min(crop_size) < 1:
        raise ValueError(f"crop_size must be three positive voxel counts (x, y, z), got {list(crop_size)}")
    whole, air = _isotropic(row, column, spacing_mm, tuple(hu_window), min_component_voxels)
    if crop == "margin":
        image, mask = crop_margin(whole.image, whole.mask, margin_mm)
    else:
        image, mask = crop_fixed(whole.image, whole.mask, tuple(crop_size), pad_value=air)
    return PreparedCT(case_id=whole.case_id, image=image, mask=mask)


# The isotropic volumes of the case inside prepare_inputs, keyed by files and settings; None outside.
_VOLUMES: contextvars.ContextVar[dict | None] = contextvars.ContextVar("isotropic_volumes", default=None)


def _isotropic(row: Mapping, column: str, spacing_mm: float, hu_window: tuple, min_component_voxels: int
               ) -> tuple[PreparedCT, float]:
    """The whole resampled, normalised volume with its largest tumour component, and its minimum (air)."""
    key = (str(row[column]), str(row["mask"]), float(spacing_mm), tuple(float(h) for h in hu_window),
           int(min_component_voxels))
    volumes = _VOLUMES.get()
    if volumes is not None and key in volumes:
        return volumes[key]
    case_id = str(row["case_id"])
    image = read_ct(row[column], case_id)
    mask = read_ct(row["mask"], case_id)
    # A margin as large as the volume's physical extent keeps every voxel: no crop.
    extent = max(size * spacing for size, spacing in zip(image.GetSize(), image.GetSpacing()))
    whole = preprocess_ct(
        case_id, image, mask, spacing_mm=spacing_mm, normalisation="hu_window", hu_window=hu_window,
        min_component_voxels=min_component_voxels, crop="margin", margin_mm=extent,
    )
    result = (whole, float(sitk.GetArrayViewFromImage(whole.image).min()))
    if volumes is not None:
        volumes[key] = result
    return result


class _Pending(Exception):
    """Raised by :func:`cached` while :func:`pending` asks about an entry its cache lacks."""


_PROBING: contextvars.ContextVar[bool] = contextvars.ContextVar("probing_cache", default=False)


def cached(
    cache_dir: str | Path | None, kind: str, row: Mapping, files: Sequence[str], settings: Mapping,
    compute: Callable[[], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """``compute()`` for one case, read from / written to ``cache_dir/kind`` when given."""
    if cache_dir is None:
        return {} if _PROBING.get() else compute()
    stamp = {"settings": settings, "files": [_file_stamp(row[column]) for column in files]}
    key = hashlib.sha256(json.dumps(stamp, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = Path(cache_dir) / kind / f"{row['case_id']}-{key}.npz"
    if _PROBING.get():
        if not path.is_file():
            raise _Pending
        return {}
    if path.is_file():
        with np.load(path) as stored:
            return dict(stored)
    arrays = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)
    return arrays


def pending(function: Callable[[Mapping], object], row: Mapping) -> bool:
    """Whether computing the per-case input ``function(row)`` now would fill its cache.

    True only when ``function`` (built on :func:`cached`) has a cache that lacks this case
    and these settings; nothing is computed or read to find out.
    """
    token = _PROBING.set(True)
    try:
        function(row)
        return False
    except _Pending:
        return True
    finally:
        _PROBING.reset(token)


def prepare_inputs(row: Mapping, functions: Sequence[Callable[[Mapping], object]]) -> list[str]:
    """Compute the inputs ``functions`` of one case that are :func:`pending`, sharing its preprocessing.

    Returns the errors (one line each); a failing input is left for the pipeline that needs
    it to report in its own context.
    """
    errors = []
    with fresh_dict(_VOLUMES):  # a case is read and resampled once per file, spacing and window
        for function in functions:
            if not pending(function, row):
                continue
            try:
                function(row)
            except Exception as err:  # the pipeline that needs it recomputes it and reports it
                errors.append(f"case {row['case_id']}: {type(err).__name__}: {err}")
    return errors


def _file_stamp(value: str) -> list:
    """Path, size and modification time of an input file (or of a DICOM folder's files)."""
    path = Path(value)
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return [str(path)] + [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]


def tumour_volume(
    row: Mapping,
    *,
    column: str = "ct",
    spacing_mm: float = 1.0,
    hu_window: Sequence[float] = (-500, 500),
    crop_size: int = 64,
    map_features: Mapping[str, Sequence[str]] | None = None,
    kernel_radius: int = 1,
    stride: int = 2,
    bin_count: int = 16,
    cache_dir: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """A ``crop_size^3`` crop around the tumour: ``volume`` (C, z, y, x) and ``mask`` (z, y, x).

    Channel 0 is the CT (HU window -> [0, 1]); channel ``1 + k`` is the k-th pyradiomics
    voxel-based map (``map_features``, default :data:`DEFAULT_MAP_FEATURES`), raw values
    inside the tumour and 0 outside. Maps are computed on every ``stride``-th tumour voxel
    per axis (kernels still see every voxel) and each other tumour voxel takes the value
    of its nearest computed voxel; the pipeline standardises the channels on its training
    cases.
    """
    features = {str(k): [str(n) for n in v] for k, v in (map_features or DEFAULT_MAP_FEATURES).items()}
    settings = dict(column=column, spacing_mm=spacing_mm, hu_window=list(hu_window), crop_size=crop_size,
                    map_features=features, kernel_radius=kernel_radius, stride=stride, bin_count=bin_count)

    def compute() -> dict[str, np.ndarray]:
        ct = prepare_case(row, column, spacing_mm=spacing_mm, hu_window=hu_window, crop_size=(crop_size,) * 3)
        encoder = radiomics_maps(features=features, kernel_radius=kernel_radius, stride=stride, bin_count=bin_count)
        values, coords = encoder.encode(ct)
        mask = ct.mask_array()
        maps = _dense_maps(ct, mask, values, coords)
        return {"volume": np.concatenate([ct.image_array()[None], maps]).astype(np.float32), "mask": mask}

    return cached(cache_dir, "tumour_volume", row, [column, "mask"], settings, compute)


def _dense_maps(ct: PreparedCT, mask: np.ndarray, values: np.ndarray, coords_mm: np.ndarray) -> np.ndarray:
    """(D, z, y, x) maps: each tumour voxel takes its nearest computed voxel's values, 0 outside."""
    zyx = _mm_to_index(ct, coords_mm)
    computed = np.zeros(mask.shape, bool)
    computed[tuple(zyx.T)] = True
    # Index of the nearest computed voxel for every voxel of the crop.
    _, nearest = ndimage.distance_transform_edt(~computed, return_indices=True)
    lookup = np.full(mask.shape, -1, np.int64)
    lookup[tuple(zyx.T)] = np.arange(len(zyx))
    source = lookup[tuple(nearest)]
    maps = values[source].transpose(3, 0, 1, 2)
    return np.where(mask[None] == 1, maps, 0.0)


def _mm_to_index(ct: PreparedCT, coords_mm: np.ndarray) -> np.ndarray:
    """Physical points (N, 3) x/y/z in mm -> integer voxel indices (N, 3) in z/y/x order."""
    direction = np.array(ct.image.GetDirection()).reshape(3, 3)
    spacing = np.array(ct.image.GetSpacing())
    origin = np.array(ct.image.GetOrigin())
    ijk = np.linalg.solve(direction * spacing, (coords_mm - origin).T).T
    return np.rint(ijk[:, ::-1]).astype(int)


def scalar_radiomics(
    row: Mapping,
    *,
    column: str = "ct",
    spacing_mm: float = 1.0,
    hu_window: Sequence[float] = (-500, 500),
    margin_mm: float = 10.0,
    features: Mapping[str, Sequence[str] | None] | None = None,
    image_types: Sequence[str] = ("Original",),
    log_sigma: Sequence[float] = (1.0, 3.0),
    bin_count: int = 32,
    cache_dir: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """Whole-tumour pyradiomics features: ``values`` (D,) float32 and their ``names`` (D,).

    The tumour is cropped with ``margin_mm`` around it (never clipped, unlike a fixed
    crop); ``features``/``image_types``/``log_sigma``/``bin_count`` are those of
    :func:`radiopath.encoders.radiomics.radiomics_scalar`.
    """
    features = None if features is None else {str(k): None if v is None else [str(n) for n in v]
                                               for k, v in features.items()}
    settings = dict(column=column, spacing_mm=spacing_mm, hu_window=list(hu_window), margin_mm=margin_mm,
                    features=features, image_types=list(image_types), log_sigma=list(log_sigma),
                    bin_count=bin_count)

    def compute() -> dict[str, np.ndarray]:
        ct = prepare_case(row, column, spacing_mm=spacing_mm, hu_window=hu_window, crop="margin",
                          margin_mm=margin_mm)
        encoder = _scalar_encoder(json.dumps([features, list(image_types), list(log_sigma), bin_count]))
        values, _ = encoder.encode(ct)
        return {"values": values[0], "names": np.array(encoder.feature_names)}

    return cached(cache_dir, "scalar_radiomics", row, [column, "mask"], settings, compute)


@functools.lru_cache(maxsize=None)
def _scalar_encoder(settings: str):
    """One pyradiomics scalar encoder per settings (JSON of features, image types, sigmas, bins) and process.

    Building one runs pyradiomics on a probe image to learn the feature names, which
    costs about as much as a small case.
    """
    features, image_types, log_sigma, bin_count = json.loads(settings)
    return radiomics_scalar(features=features, image_types=image_types, log_sigma=log_sigma, bin_count=bin_count)


def tumour_values(
    row: Mapping,
    *,
    column: str,
    spacing_mm: float,
    hu_window: Sequence[float],
    crop_size: int,
    features: Mapping[str, Sequence[str] | None],
    bin_count: int,
    cache_dir: str | Path | None,
) -> dict[str, np.ndarray]:
    """Whole-tumour values of voxel-map candidates: ``values`` (D,) float32 and ``names`` (D,).

    pyradiomics' scalar features ``features`` of the original image, on the tumour inside the
    same ``crop_size^3`` crop and with the same ``bin_count`` as :func:`tumour_volume`'s maps,
    named as its maps are (``original_{class}_{feature}``).
    """
    features = {str(k): None if v is None else [str(n) for n in v] for k, v in features.items()}
    settings = dict(column=column, spacing_mm=spacing_mm, hu_window=list(hu_window), crop_size=crop_size,
                    features=features, bin_count=bin_count)

    def compute() -> dict[str, np.ndarray]:
        ct = prepare_case(row, column, spacing_mm=spacing_mm, hu_window=hu_window, crop_size=(crop_size,) * 3)
        encoder = _scalar_encoder(json.dumps([features, ["Original"], [], bin_count]))
        values, _ = encoder.encode(ct)
        return {"values": values[0], "names": np.array(encoder.feature_names)}

    return cached(cache_dir, "tumour_values", row, [column, "mask"], settings, compute)


def tumour_slices(
    row: Mapping,
    *,
    column: str = "ct",
    spacing_mm: float = 1.0,
    hu_window: Sequence[float] = (-500, 500),
    size: int = 64,
    depth: int = 64,
    min_area_fraction: float = 0.25,
    cache_dir: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """Axial ``size x size`` slices through the tumour: ``slices`` (S, size, size) and ``areas`` (S,).

    The crop is ``size x size x depth`` voxels centred on the tumour centroid; slices whose
    tumour area is at least ``min_area_fraction`` of the largest are kept, in z order,
    with their tumour areas in voxels (the largest slice is ``slices[areas.argmax()]``).
    """
    settings = dict(column=column, spacing_mm=spacing_mm, hu_window=list(hu_window), size=size, depth=depth,
                    min_area_fraction=min_area_fraction)

    def compute() -> dict[str, np.ndarray]:
        ct = prepare_case(row, column, spacing_mm=spacing_mm, hu_window=hu_window, crop_size=(size, size, depth))
        image, mask = ct.image_array(), ct.mask_array()
        areas = mask.reshape(mask.shape[0], -1).sum(axis=1)
        if areas.max() == 0:
            raise CaseError(ct.case_id, f"no tumour voxel inside the {size}x{size}x{depth} crop")
        keep = areas >= min_area_fraction * areas.max()
        return {"slices": image[keep].astype(np.float32), "areas": areas[keep].astype(np.int64)}

    return cached(cache_dir, "tumour_slices", row, [column, "mask"], settings, compute)


def has_image(row: Mapping, column: str) -> bool:
    """Whether the row names an existing image in ``column`` (an empty cell is a missing phase)."""
    value = row.get(column)
    return isinstance(value, (str, os.PathLike)) and str(value) != "" and Path(value).exists()


def rows(cases: pd.DataFrame) -> list[dict]:
    """The manifest rows as plain dicts (what the functions above take)."""
    return cases.to_dict("records")
