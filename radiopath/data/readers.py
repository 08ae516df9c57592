"""Read CT volumes (SimpleITK) and whole-slide images (OpenSlide).

Every problem with a case's file (missing, truncated, unreadable, not a 3-D
scalar volume, no resolution) raises :class:`~radiopath.errors.CaseError`
naming the case, the path and the underlying message, so a stage can report the
case and go on with the others.
"""

from __future__ import annotations

import gzip
import math
import re
import zlib
from pathlib import Path

import openslide
import SimpleITK as sitk

from radiopath.errors import CaseError

CT_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def image_stem(path: str | Path) -> str:
    """The image's file name without its format suffix (``ct/p1.nii.gz`` -> ``p1``, ``wsi/p1.tif`` -> ``p1``)."""
    name = Path(path).name
    suffix = next((s for s in CT_SUFFIXES if name.lower().endswith(s)), Path(name).suffix)
    return name[:len(name) - len(suffix)] if suffix else name


_ITK_PREFIX = re.compile(r"^ITK ERROR: \w+\(0x[0-9a-fA-F]+\): ")


def read_ct(path: str | Path, case_id: str) -> sitk.Image:
    """Read a 3-D CT volume (or mask) from a file or a DICOM series folder.

    Files: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) or MetaImage
    (``.mha``, ``.mhd``). A folder is read as a DICOM series; when it holds several
    series, the one with the most files is read. Raises :class:`CaseError` when the
    path is missing, the file is truncated or unreadable, or the image is not a
    3-D single-channel volume.
    """
    path = Path(path)
    if not path.exists():
        raise CaseError(case_id, f"CT not found: {path}")
    image = _read_dicom_series(path, case_id) if path.is_dir() else _read_ct_file(path, case_id)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(
            case_id,
            f"{path} is not a 3-D single-channel volume "
            f"({image.GetDimension()}-D, {image.GetNumberOfComponentsPerPixel()} channel(s))",
        )
    return image


def _ct_suffix(path: Path) -> str:
    """The CT suffix ``path`` ends with (case-insensitive), or ``""``."""
    name = path.name.lower()
    return next((suffix for suffix in CT_SUFFIXES if name.endswith(suffix)), "")


def _read_ct_file(path: Path, case_id: str) -> sitk.Image:
    """Read one volume file, checking NIfTI files for truncation first."""
    suffix = _ct_suffix(path)
    if not suffix:
        raise CaseError(case_id, f"unsupported CT format {path.name!r}: expected one of {', '.join(CT_SUFFIXES)}")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        if suffix in (".nii", ".nii.gz"):
            _check_nifti_complete(path, case_id, reader)
        return reader.Execute()
    except RuntimeError as error:
        raise CaseError(case_id, f"cannot read CT {path}: {_itk_message(error)}") from error


def _check_nifti_complete(path: Path, case_id: str, reader: sitk.ImageFileReader) -> None:
    """Raise :class:`CaseError` when a NIfTI file holds fewer bytes than its header promises.

    ITK's NIfTI reader fills a truncated file's missing voxels with zeros and
    reports nothing, so the length is checked here from the header fields.
    """
    ndim = int(reader.GetMetaData("dim[0]"))
    voxels = math.prod(int(reader.GetMetaData(f"dim[{i}]")) for i in range(1, ndim + 1))
    expected = int(float(reader.GetMetaData("vox_offset"))) + voxels * int(reader.GetMetaData("bitpix")) // 8
    try:
        actual = _gzip_length(path) if path.name.lower().endswith(".gz") else path.stat().st_size
    except (EOFError, OSError, zlib.error) as error:
        raise CaseError(case_id, f"cannot read CT {path}: damaged or truncated gzip stream ({error})") from error
    if actual < expected:
        raise CaseError(case_id, f"cannot read CT {path}: truncated NIfTI ({actual} of {expected} bytes)")


def _gzip_length(path: Path) -> int:
    """Decompressed length of a gzip file, streamed so a large CT is never held twice."""
    total = 0
    with gzip.open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            total += len(chunk)
    return total


def _read_dicom_series(folder: Path, case_id: str) -> sitk.Image:
    """Read the DICOM series with the most files in ``folder`` (slices sorted by GDCM)."""
    try:
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        files = max(
            (sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids),
            key=len,
            default=(),
        )
        if not files:
            raise CaseError(case_id, f"no DICOM series in folder {folder}")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        return reader.Execute()
    except RuntimeError as error:
        raise CaseError(case_id, f"cannot read DICOM series in {folder}: {_itk_message(error)}") from error


def _itk_message(error: Exception) -> str:
    """The informative part of an ITK exception: its first and last message lines."""
    lines = [
        _ITK_PREFIX.sub("", line.strip())
        for line in str(error).splitlines()
        if line.strip() and not line.startswith("Exception thrown in")
    ]
    if not lines:
        return type(error).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"


class StatedResolutionSlide(openslide.OpenSlide):
    """An OpenSlide slide whose level-0 µm per pixel is stated by the manifest (its ``mpp`` column).

    ``properties`` report the stated value as ``openslide.mpp-x`` and ``mpp-y``, so every
    reader of the slide (tissue mask, tile grid, features) uses the one resolution.
    """

    def __init__(self, path: str, *, mpp: float):
        super().__init__(path)
        self.stated_mpp = float(mpp)

    @property
    def properties(self) -> dict[str, str]:
        stated = str(self.stated_mpp)
        return {**super().properties, openslide.PROPERTY_NAME_MPP_X: stated, openslide.PROPERTY_NAME_MPP_Y: stated}


def open_slide(path: str | Path, case_id: str, *, mpp: float | None = None) -> openslide.OpenSlide:
    """Open a whole-slide image with OpenSlide; :class:`CaseError` when missing or unreadable.

    ``mpp`` (the manifest's ``mpp`` column) overrides the µm per level-0 pixel the slide records.
    """
    path = Path(path)
    if not path.is_file():
        raise CaseError(case_id, f"slide not found: {path}")
    try:
        return openslide.OpenSlide(str(path)) if mpp is None else StatedResolutionSlide(str(path), mpp=mpp)
    except (openslide.OpenSlideError, OSError) as error:
        raise CaseError(case_id, f"cannot open slide {path}: {error}") from error


def recorded_mpp(slide: openslide.OpenSlide) -> float | None:
    """Level-0 µm per pixel from ``openslide.mpp-x`` (pixels assumed square), None when not usable."""
    try:
        mpp = float(slide.properties.get(openslide.PROPERTY_NAME_MPP_X, "nan"))
    except ValueError:
        return None
    return mpp if math.isfinite(mpp) and mpp > 0 else None


def slide_mpp(slide: openslide.OpenSlide, case_id: str, fallback: float | None = None) -> float:
    """Level-0 µm per pixel from ``openslide.mpp-x`` (pixels assumed square).

    When the slide does not record it, ``fallback`` is returned if given, else
    :class:`CaseError` is raised.
    """
    mpp = recorded_mpp(slide)
    if mpp is not None:
        return mpp
    if fallback is not None:
        return float(fallback)
    value = slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
    raise CaseError(case_id, f"slide records no usable openslide.mpp-x ({value!r}); set a fallback mpp")
