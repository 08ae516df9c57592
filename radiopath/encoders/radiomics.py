"""pyradiomics CT encoders: whole-tumour scalar features and voxel-based feature maps.

``radiomics_scalar`` gives one vector per case (``RadiomicsFeatureExtractor`` on the
tumour; the patch position is the tumour centroid). ``radiomics_maps`` gives one vector
per kept tumour voxel: pyradiomics' voxel-based features over a
``(2 * kernel_radius + 1)^3`` neighbourhood restricted to the tumour.

Intensities arrive normalised (e.g. a HU window mapped to [0, 1]), so a bin width in
HU would be meaningless: both encoders discretise with a fixed bin *count* over the
tumour's own intensity range by default (``bin_width`` is there for images whose
scale is known). pyradiomics runs on the CPU only; ``device`` is ignored.

Why the maps encoder drives pyradiomics' feature classes rather than
``RadiomicsFeatureExtractor.execute(..., voxelBased=True)``: the extractor computes a
feature at *every* mask voxel, and the kernel is masked by the same mask. Handing it a
strided mask would shrink each kernel to the strided voxels (at stride 2 and radius 1
the kernel is the centre voxel alone), and ``maskedKernel=False`` would mix in the
tissue around the tumour. So each feature class gets the full tumour mask (kernel
masking and grey-level binning as the extractor does them) and only its list of
target voxels is cut to the stride grid. The values equal the extractor's at those
voxels (``tests/test_radiomics_encoder.py`` checks it) at ~1/stride^3 of the cost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import radiomics
import SimpleITK as sitk
from radiomics import featureextractor, imageoperations

from radiopath.encoders.base import VolumeEncoder
from radiopath.encoders.registry import ENCODERS
from radiopath.errors import CaseError

log = logging.getLogger(__name__)

FeatureSpec = Mapping[str, Sequence[str] | None]

# None = every non-deprecated feature of the class.
SCALAR_FEATURES: dict[str, list[str] | None] = {
    name: None for name in ("firstorder", "shape", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
}
# Local intensity level, spread and disorder plus two co-occurrence textures: enough to
# tell tissue types apart; each further GLCM feature costs little, a further class a lot.
MAP_FEATURES: dict[str, list[str] | None] = {
    "firstorder": ["Mean", "Variance", "Entropy", "10Percentile", "90Percentile"],
    "glcm": ["Contrast", "JointEnergy"],
}
MAP_CLASSES = ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")


def _quiet_pyradiomics() -> None:
    # pyradiomics logs every step at INFO on its own logger, which floods run logs.
    logging.getLogger("radiomics").setLevel(logging.WARNING)


def _no_checkpoint(checkpoint) -> None:
    if checkpoint is not None:
        raise ValueError(f"pyradiomics encoders have no weights; got checkpoint={checkpoint!r}, expected null")


def _discretisation(bin_count: int | None, bin_width: float | None) -> dict:
    """pyradiomics grey-level binning settings: exactly one of bin count and bin width."""
    if (bin_count is None) == (bin_width is None):
        raise ValueError(f"give exactly one of bin_count and bin_width, got {bin_count!r} and {bin_width!r}")
    return {"binCount": int(bin_count)} if bin_count is not None else {"binWidth": float(bin_width)}


def _all_features(class_name: str) -> list[str]:
    """Every non-deprecated feature of a pyradiomics class, sorted, less redundant ones."""
    names = radiomics.getFeatureClasses()[class_name].getFeatureNames()
    # pyradiomics' GLCM is symmetric, so SumAverage = 2 * JointAverage: a duplicate
    # column that also logs a warning for every image.
    redundant = {"SumAverage"} if class_name == "glcm" else set()
    return sorted(name for name, deprecated in names.items() if not deprecated and name not in redundant)


def _feature_spec(features: FeatureSpec, allowed: Sequence[str]) -> dict[str, list[str]]:
    """Plain ``{class: [feature, ...]}`` (``None`` = all) checked against pyradiomics' names."""
    classes = radiomics.getFeatureClasses()
    spec = {}
    for class_name, names in features.items():
        class_name = str(class_name)
        if class_name not in allowed:
            raise ValueError(f"unknown or unsupported feature class {class_name!r}; choose from {list(allowed)}")
        if names is None:
            names = _all_features(class_name)
        names = [str(name) for name in names]
        unknown = sorted(set(names) - set(classes[class_name].getFeatureNames()))
        if unknown or not names:
            raise ValueError(f"pyradiomics class {class_name!r}: no features or unknown ones {unknown}")
        spec[class_name] = names
    if not spec:
        raise ValueError("no radiomic feature classes selected")
    return spec


def _tumour_index(ct) -> np.ndarray:
    """(3, N) z/y/x indices of the tumour voxels (label 1, as pyradiomics); none is a case error."""
    zyx = np.array(np.nonzero(ct.mask_array() == 1))
    if zyx.shape[1] == 0:
        raise CaseError(ct.case_id, "the tumour mask is empty")
    return zyx


class RadiomicsScalarEncoder(VolumeEncoder):
    """Whole-tumour pyradiomics features: one patch per case, at the tumour centroid."""

    name = "radiomics_scalar"

    def __init__(self, features: dict[str, list[str]], image_types: list[str], log_sigma: list[float], settings: dict):
        _quiet_pyradiomics()
        self.extractor = featureextractor.RadiomicsFeatureExtractor(additionalInfo=False, **settings)
        self.extractor.disableAllFeatures()
        self.extractor.enableFeaturesByName(**features)
        self.extractor.disableAllImageTypes()
        for image_type in image_types:
            args = {"sigma": list(log_sigma)} if image_type == "LoG" else {}
            self.extractor.enableImageTypeByName(image_type, customArgs=args)
        self.feature_names = self._probe_feature_names(max(log_sigma, default=0.0))
        self.embed_dim = len(self.feature_names)

    def _probe_feature_names(self, max_sigma: float) -> list[str]:
        """The names this configuration yields, in extraction order, from a small synthetic run.

        pyradiomics names filtered images itself (``wavelet-LLH``, ``log-sigma-3-0-mm-3D``);
        reading them off a run keeps the names and their order pyradiomics' own.
        """
        size = max(16, int(np.ceil(max_sigma)) + 2)  # LoG skips sigmas the image is too small for
        image = sitk.GetImageFromArray(np.random.default_rng(0).random((size,) * 3).astype(np.float32))
        mask_array = np.zeros((size,) * 3, np.uint8)
        mask_array[2:-2, 2:-2, 2:-2] = 1
        return list(self.extractor.execute(image, sitk.GetImageFromArray(mask_array)))

    def encode(self, ct, device="cpu") -> tuple[np.ndarray, np.ndarray]:
        """One ``(1, D)`` feature row in :attr:`feature_names` order and the tumour centroid in mm."""
        zyx = _tumour_index(ct)
        try:
            values = self.extractor.execute(ct.image, ct.mask)
        except ValueError as err:
            raise CaseError(ct.case_id, f"pyradiomics rejected the case: {err}") from err
        missing = [name for name in self.feature_names if name not in values]
        if missing:
            reason = f"pyradiomics computed no {missing[:3]} ({len(missing)} missing): image too small for a filter?"
            raise CaseError(ct.case_id, reason)
        vector = np.array([float(values[name]) for name in self.feature_names], dtype=np.float32)
        invalid = [name for name, value in zip(self.feature_names, vector) if not np.isfinite(value)]
        if invalid:
            raise CaseError(ct.case_id, f"non-finite radiomic features {invalid[:5]} (of {len(invalid)})")
        return vector[None], ct.index_to_mm(zyx.mean(axis=1))

    def patch_size_mm(self, ct) -> tuple[float, float, float]:
        """The tumour's bounding-box extent (x, y, z) in mm: the one patch is the whole tumour."""
        zyx = _tumour_index(ct)
        voxels = zyx.max(axis=1) - zyx.min(axis=1) + 1
        return tuple(float(v) for v in voxels[::-1] * np.array(ct.image.GetSpacing()))


class RadiomicsMapsEncoder(VolumeEncoder):
    """pyradiomics voxel-based features: one patch per tumour voxel on a stride grid."""

    name = "radiomics_maps"

    def __init__(self, features: dict[str, list[str]], kernel_radius: int, stride: int, settings: dict):
        _quiet_pyradiomics()
        self.features = features
        self.stride = stride
        self.settings = {
            **settings,
            "voxelBased": True,
            "kernelRadius": kernel_radius,
            "maskedKernel": True,  # the neighbourhood is the tumour only, never the tissue around it
            "initValue": np.nan,  # a voxel pyradiomics failed on stays NaN and is dropped, never 0
        }
        # The extractor's naming, so tables read the same as pyradiomics' own output.
        self.feature_names = [f"original_{cls}_{name}" for cls, names in features.items() for name in names]
        self.embed_dim = len(self.feature_names)

    def encode(self, ct, device="cpu") -> tuple[np.ndarray, np.ndarray]:
        """``(N, D)`` features of the kept tumour voxels and their centres ``(N, 3)`` in mm."""
        _tumour_index(ct)  # an empty mask gets a plainer message than pyradiomics gives
        try:
            image, mask, offset = self._crop(ct)
            zyx = self._strided_voxels(ct.case_id, sitk.GetArrayFromImage(mask), offset)
            columns = [self._class_values(image, mask, zyx, cls, names) for cls, names in self.features.items()]
        except ValueError as err:
            raise CaseError(ct.case_id, f"pyradiomics rejected the case: {err}") from err
        features = np.concatenate(columns, axis=1).astype(np.float32)
        return _drop_invalid(ct.case_id, features, ct.index_to_mm((zyx + offset[:, None]).T))

    def patch_size_mm(self, ct) -> tuple[float, float, float]:
        """A kept voxel stands for the ``stride^3`` cell around it (what painting back needs)."""
        return tuple(float(s) * self.stride for s in ct.image.GetSpacing())

    def _crop(self, ct) -> tuple[sitk.Image, sitk.Image, np.ndarray]:
        """Image and mask cut to the tumour plus the kernel radius, and the cut's z/y/x offset."""
        box, _ = imageoperations.checkMask(ct.image, ct.mask, **self.settings)
        image, mask = imageoperations.cropToTumorMask(ct.image, ct.mask, box, padDistance=self.settings["kernelRadius"])
        offset = np.array(ct.image.TransformPhysicalPointToIndex(image.GetOrigin()))[::-1]
        return image, mask, offset

    def _strided_voxels(self, case_id: str, mask: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """(3, N) cropped indices of tumour voxels whose full-grid index is a multiple of the stride."""
        zyx = np.array(np.nonzero(mask == 1))
        # The grid is anchored to the PreparedCT, not the crop, so it does not move with the padding.
        zyx = zyx[:, ((zyx + offset[:, None]) % self.stride == 0).all(axis=0)]
        if zyx.shape[1] == 0:
            raise CaseError(case_id, f"no tumour voxel lies on the stride-{self.stride} grid; lower the stride")
        return zyx

    def _class_values(self, image, mask, zyx: np.ndarray, class_name: str, names: list[str]) -> np.ndarray:
        """``(N, len(names))`` values of one pyradiomics feature class at the voxels ``zyx``."""
        feature_class = radiomics.getFeatureClasses()[class_name](image, mask, **self.settings)
        # Set after construction, which read the full mask for kernel masking and binning:
        # pyradiomics then computes its kernels at these voxels only.
        feature_class.labelledVoxelCoordinates = zyx
        for name in names:
            feature_class.enableFeatureByName(name)
        maps = feature_class.execute()
        return np.stack([sitk.GetArrayFromImage(maps[name])[tuple(zyx)] for name in names], axis=1)


def _drop_invalid(case_id: str, features: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop voxels with any non-finite feature (logged); none left is a case error."""
    valid = np.isfinite(features).all(axis=1)
    if not valid.any():
        raise CaseError(case_id, f"all {len(valid)} tumour voxels have non-finite radiomic features")
    if not valid.all():
        log.warning(
            "case %r: dropped %d of %d tumour voxels with non-finite radiomic features",
            case_id, (~valid).sum(), len(valid),
        )
    return features[valid], coords[valid]


@ENCODERS.register("radiomics_scalar")
def radiomics_scalar(
    checkpoint=None,
    features: FeatureSpec | None = None,
    image_types: Sequence[str] = ("Original",),
    log_sigma: Sequence[float] = (1.0, 3.0),
    bin_count: int | None = 32,
    bin_width: float | None = None,
) -> RadiomicsScalarEncoder:
    """Whole-tumour pyradiomics features.

    ``features``: ``{class: [feature, ...] or None (all)}``, default all classes incl. shape
    (``glcm`` without SumAverage, which duplicates JointAverage);
    ``image_types``: pyradiomics image types (``Original``, ``Wavelet``, ``LoG``, ...);
    ``log_sigma``: LoG sigmas in mm, used when ``LoG`` is enabled.
    """
    _no_checkpoint(checkpoint)
    image_types = [str(t) for t in image_types]
    unknown = sorted(set(image_types) - set(radiomics.getImageTypes()))
    if unknown or not image_types:
        raise ValueError(f"unknown image types {unknown}; choose from {sorted(radiomics.getImageTypes())}")
    log_sigma = [float(s) for s in log_sigma]
    if "LoG" in image_types and not log_sigma:
        raise ValueError("image type LoG needs at least one log_sigma")
    spec = _feature_spec(SCALAR_FEATURES if features is None else features, sorted(radiomics.getFeatureClasses()))
    return RadiomicsScalarEncoder(spec, image_types, log_sigma, _discretisation(bin_count, bin_width))


@ENCODERS.register("radiomics_maps")
def radiomics_maps(
    checkpoint=None,
    features: FeatureSpec | None = None,
    kernel_radius: int = 1,
    stride: int = 2,
    bin_count: int | None = 16,
    bin_width: float | None = None,
    voxel_batch: int = 1000,
) -> RadiomicsMapsEncoder:
    """Voxel-based pyradiomics features of the tumour voxels on a ``stride`` grid.

    ``features``: ``{class: [feature, ...] or None (all)}`` from the texture and first-order
    classes (shape has no voxel form); ``kernel_radius``: neighbourhood half-width in voxels;
    ``stride``: keep every stride-th voxel per axis (the kernels still see every voxel);
    ``voxel_batch``: voxels per pyradiomics batch (bounds memory: GLCM holds
    ``voxel_batch * bins^2 * 13`` doubles).
    """
    _no_checkpoint(checkpoint)
    if kernel_radius < 1 or stride < 1 or voxel_batch < 1:
        raise ValueError(f"kernel_radius, stride, voxel_batch must be >= 1: {kernel_radius}, {stride}, {voxel_batch}")
    spec = _feature_spec(MAP_FEATURES if features is None else features, MAP_CLASSES)
    settings = {**_discretisation(bin_count, bin_width), "voxelBatch": int(voxel_batch)}
    return RadiomicsMapsEncoder(spec, int(kernel_radius), int(stride), settings)
