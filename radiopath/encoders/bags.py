"""HDF5 feature bags in the CLAM/Trident layout: read them, write them.

One file per slide, two datasets:

============ ==================================================================
``features`` ``(N, D)`` float: one row per patch
``coords``   ``(N, 2)`` integers: level-0 pixel (x, y) of each patch's top-left
             corner, in the order of ``features``
============ ==================================================================

What the patches are is in attributes, which Trident and CLAM keep on ``coords``.
This reader looks in the file's, ``features``' and ``coords``' attributes (in that
order, the later winning) for:

``level0_mpp``
    µm per level-0 pixel (radiopath writes it; Trident and CLAM do not).
``level0_magnification``
    Trident's objective power of level 0; taken as ``10 / magnification`` µm per
    pixel, Trident's own conversion (40x = 0.25 µm/px), when ``level0_mpp`` is absent.
``patch_size_level0``
    Trident's patch side in level-0 pixels. Without it: ``patch_size`` (pixels at the
    patching resolution) times CLAM's ``downsample``, or times
    ``level0_magnification / target_magnification`` (Trident), or, with the slide
    at hand, times the slide's downsample of CLAM's ``patch_level``.
``level0_width``, ``level0_height``
    the slide's level-0 size (Trident), to check the coordinates without the slide.
``encoder``
    the patch encoder's name, where the writer recorded it; else Trident's folder
    name ``features_<encoder>``.

:func:`write_bag` writes the same layout from radiopath's patch features, with
Trident's ``coords`` attributes (so Trident's and CLAM's readers take it) and
radiopath's own (``level0_mpp``, ``encoder``, ``case_id``, ``modality``) on the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from radiopath.encoders.features import PatchFeatures, all_finite, starts_outside
from radiopath.errors import CaseError
from radiopath.io import atomic_path
from radiopath.modality import PATHOLOGY, modality

FEATURES, COORDS = "features", "coords"
SUFFIX = ".h5"
# Trident converts between magnification and resolution as mpp = 10 / magnification.
MAGNIFICATION_TIMES_MPP = 10.0
_TRIDENT_FOLDER_PREFIX = "features_"
UNRECORDED_ENCODER = "unrecorded"


@dataclass(frozen=True)
class FeatureBag:
    """The content of one bag: its arrays and the attributes of its file, ``features`` and ``coords``."""

    path: Path
    features: np.ndarray
    coords: np.ndarray
    attrs: dict

    def number(self, key: str) -> float | None:
        """Attribute ``key`` as a positive finite number (the first, for a pair like CLAM's ``downsample``)."""
        value = self.attrs.get(key)
        if isinstance(value, (bytes, str)) or value is None:  # Trident writes a missing value as "None"
            return None
        value = np.asarray(value, dtype=np.float64).reshape(-1)
        return float(value[0]) if value.size and np.isfinite(value[0]) and value[0] > 0 else None

    @property
    def level0_mpp(self) -> float | None:
        """µm per level-0 pixel from the attributes, None when they do not say."""
        mpp = self.number("level0_mpp")
        if mpp is not None:
            return mpp
        magnification = self.number("level0_magnification")
        return None if magnification is None else MAGNIFICATION_TIMES_MPP / magnification

    def patch_size_level0(self, *, level_downsamples: tuple[float, ...] | None = None) -> float | None:
        """A patch's side in level-0 pixels from the attributes (and the slide's level downsamples, if known)."""
        size = self.number("patch_size_level0")
        if size is not None:
            return size
        patch, downsample = self.number("patch_size"), self.number("downsample")
        if patch is None:
            return None
        if downsample is not None:
            return patch * downsample
        source, target = self.number("level0_magnification"), self.number("target_magnification")
        if source is not None and target is not None:
            return patch * source / target
        level = self.attrs.get("patch_level")
        if not isinstance(level, (int, np.integer)):
            return None
        if level == 0:
            return patch
        if level_downsamples is not None and level < len(level_downsamples):
            return patch * float(level_downsamples[level])
        return None

    @property
    def level0_size(self) -> tuple[int, int] | None:
        """The slide's level-0 (width, height) from the attributes, None when not recorded."""
        width, height = self.number("level0_width"), self.number("level0_height")
        return None if width is None or height is None else (int(width), int(height))

    @property
    def encoder(self) -> str:
        """The encoder's name: the ``encoder`` attribute, Trident's ``features_<encoder>`` folder, or ``unrecorded``."""
        recorded = self.attrs.get("encoder")
        if recorded is not None:
            return recorded.decode() if isinstance(recorded, bytes) else str(recorded)
        folder = self.path.parent.name
        if folder.startswith(_TRIDENT_FOLDER_PREFIX) and len(folder) > len(_TRIDENT_FOLDER_PREFIX):
            return folder[len(_TRIDENT_FOLDER_PREFIX):]
        return UNRECORDED_ENCODER


def read_bag(path: str | Path, *, case_id: str) -> FeatureBag:
    """Read and check one bag; :class:`CaseError` naming the case and the file for anything unusable.

    Refused: a file HDF5 cannot open, a missing ``features`` or ``coords`` dataset,
    shapes other than ``(N, D)`` and ``(N, 2)``, ``features`` and ``coords`` of
    different lengths, no patches, NaN or inf features, coordinates that are not
    finite or lie left of or above the slide (negative).
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            missing = [name for name in (FEATURES, COORDS) if not isinstance(handle.get(name), h5py.Dataset)]
            if missing:
                raise CaseError(case_id, f"feature bag {path} has no {' or '.join(missing)} dataset "
                                         f"(it holds: {', '.join(handle) or 'nothing'})")
            features = np.asarray(handle[FEATURES][()], dtype=np.float32)
            coords = np.asarray(handle[COORDS][()])
            attrs = {**handle.attrs, **handle[FEATURES].attrs, **handle[COORDS].attrs}
    except OSError as error:
        raise CaseError(case_id, f"cannot read feature bag {path}: {error}") from error
    _check_arrays(case_id, path, features, coords)
    return FeatureBag(path, features, coords.astype(np.float64), attrs)


def _check_arrays(case_id: str, path: Path, features: np.ndarray, coords: np.ndarray) -> None:
    if features.ndim != 2 or coords.ndim != 2 or coords.shape[1] != 2:
        raise CaseError(case_id, f"feature bag {path}: features {features.shape} and coords {coords.shape} "
                                 "are not (N, D) and (N, 2)")
    if len(features) != len(coords):
        raise CaseError(case_id, f"feature bag {path}: {len(features)} feature rows but {len(coords)} coords; "
                                 "each patch needs one of each")
    if len(features) == 0:
        raise CaseError(case_id, f"feature bag {path} holds no patches")
    if not np.issubdtype(coords.dtype, np.number) or not np.isfinite(coords).all():
        raise CaseError(case_id, f"feature bag {path}: coords are not finite numbers")
    if not all_finite(features):
        raise CaseError(case_id, f"feature bag {path}: features contain NaN or inf")
    if (coords < 0).any():
        raise CaseError(case_id, f"feature bag {path}: {int((coords < 0).any(axis=1).sum())} coords are negative, "
                                 "outside the slide (coords are level-0 pixels of the top-left corner)")


def check_inside(bag: FeatureBag, *, case_id: str, size: tuple[int, int]) -> None:
    """Every patch's top-left corner must lie on the ``size`` = (width, height) level-0 slide.

    Patches may reach past the right or bottom edge (CLAM pads edge patches), not start there.
    """
    outside = starts_outside(bag.coords, size)
    if outside.any():
        first = bag.coords[np.argmax(outside)].astype(np.int64).tolist()
        raise CaseError(case_id, f"feature bag {bag.path}: {int(outside.sum())} of {len(bag.coords)} coords lie "
                                 f"outside the {size[0]} x {size[1]} px slide (first: {first}); "
                                 "is it the bag of another slide?")


def coordinate_step(coords: np.ndarray) -> float | None:
    """The smallest spacing between distinct x or y coordinates (a grid's step), None for a single patch."""
    steps = np.concatenate([np.diff(np.unique(axis)) for axis in coords.T])
    return float(steps.min()) if steps.size else None


def write_bag(patches: PatchFeatures, path: str | Path, *, tile_size: int, tile_mpp: float) -> None:
    """Write slide patch features as a CLAM/Trident bag, atomically.

    ``tile_size`` and ``tile_mpp`` are the tiling's pixels and µm per pixel
    (``wsi.tiling``), recorded as Trident's ``patch_size`` and ``target_magnification``.
    """
    if modality(patches.modality).bag_column is None:
        raise ValueError(f"{patches.modality} features have no HDF5 bag layout (it is for slides); write .pt")
    coords_attrs = {
        "patch_size": int(tile_size),
        "patch_size_level0": int(round(float(patches.patch_size[0]))),
        "level0_magnification": MAGNIFICATION_TIMES_MPP / float(patches.level0_mpp),
        "target_magnification": MAGNIFICATION_TIMES_MPP / float(tile_mpp),
        "overlap": 0,
        "name": patches.case_id,
    }
    file_attrs = {"case_id": patches.case_id, "modality": patches.modality, "encoder": patches.encoder,
                  "level0_mpp": float(patches.level0_mpp), "coord_units": patches.coord_units}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.attrs.update(file_attrs)
        handle.create_dataset(FEATURES, data=patches.features.astype(np.float32))
        coords = handle.create_dataset(COORDS, data=np.rint(patches.coords).astype(np.int64))
        coords.attrs.update(coords_attrs)


def load_features(path: str | Path) -> PatchFeatures:
    """One file of the feature store: ``.pt`` (:meth:`PatchFeatures.load`) or a bag :func:`write_bag` wrote."""
    path = Path(path)
    if path.suffix != SUFFIX:
        return PatchFeatures.load(path)
    bag = read_bag(path, case_id=path.stem)
    case_id = str(bag.attrs.get("case_id", path.stem))
    level0_mpp, size = bag.level0_mpp, bag.patch_size_level0()
    if level0_mpp is None or size is None:
        raise CaseError(case_id, f"feature bag {path} records no level0_mpp or patch size; "
                                 "give it through the manifest's pathology_features column instead")
    return PatchFeatures(case_id=case_id, modality=str(bag.attrs.get("modality", PATHOLOGY.name)),
                         encoder=bag.encoder, features=bag.features, coords=bag.coords,
                         patch_size=(size, size), level0_mpp=level0_mpp)
