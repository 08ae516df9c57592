"""Planted ground truth on the graph nodes, and the AUROC of node importance against it.

The demo cohort (:mod:`radiopath.data.demo_cohort`) writes ``truth/truth.csv`` with one
row per case; its ``ct_pattern`` and ``wsi_pattern`` columns name mask files in the same
folder (an empty cell: no truth for that modality):

- **CT** (``radiology``): a NIfTI mask on the CT's own voxel grid. The patch-feature file
  gives each patch's centre in mm in the CT's physical space (x/y/z): preprocessing
  resamples and crops, but keeps the physical frame (``PreparedCT.index_to_mm``), so a
  centre maps onto the mask through the mask's origin, spacing and direction, and the
  patch spans ``patch_size / spacing`` mask voxels along the same image axes (preprocessing
  keeps the direction). The mask must lie on the manifest CT's grid.
- **Slides** (``pathology``): a PNG, 255 = pattern, at a downsample of level 0 that the
  file sizes give (slide level-0 width / PNG width, the same for the height); a tile's
  top-left ``coords`` and ``patch_size`` (level-0 px) divide by it.

A patch's planted fraction is the share of its box the mask covers, sampled on a sub-grid
at least as fine as the mask's pixels (exact when the box edges fall on pixel edges). A
node's planted fraction is the area-weighted share over its patches (``graph.assignment``);
all patches of a feature file have one size, so it is their mean. A node is *planted* when
that fraction is at least ``planted_fraction`` (0.5 by default: most of its area is pattern).

No truth is ``None``, never a mask of zeros; a truth file that does not fit its image
raises :class:`~radiopath.errors.CaseError` naming the case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from radiopath.data.readers import open_slide, read_ct
from radiopath.encoders.features import PatchFeatures
from radiopath.errors import CaseError
from radiopath.modality import MODALITIES, PATHOLOGY, RADIOLOGY
from radiopath.modality import modality as modality_spec
from radiopath.preprocess.ct import check_geometry

TRUTH_FILE = Path("truth") / "truth.csv"  # beside the cohort manifest
# A modality's truth column is named after the manifest column of the image it lies on: ct_pattern, wsi_pattern.
TRUTH_COLUMNS = {m.name: f"{m.image_column}_pattern" for m in MODALITIES.values()}
DOWNSAMPLE_COLUMN = "wsi_pattern_downsample"  # optional: what the slide truth PNG's downsample should be
SAMPLES_PER_CHUNK = 1 << 20  # mask look-ups held in memory at once


def node_labels(importance: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``truth`` as booleans, checked to have one value per node of ``importance``."""
    if importance.shape != truth.shape:
        raise ValueError(f"importance has shape {tuple(importance.shape)} but the truth {tuple(truth.shape)}")
    return truth.bool()


def importance_auroc(*, importance: torch.Tensor, truth: torch.Tensor) -> float:
    """AUROC of node importance against the planted nodes; NaN unless the truth has both classes."""
    truth = node_labels(importance, truth)
    if truth.all() or not truth.any():
        return math.nan
    return float(roc_auc_score(truth.numpy(), importance.double().numpy()))


# --------------------------------------------------------------------------- the truth table


@dataclass
class CohortTruth:
    """``truth.csv`` of a cohort: per case the mask file of each modality (relative to its folder)."""

    path: Path
    table: pd.DataFrame  # indexed by case_id

    @classmethod
    def load(cls, path: str | Path) -> "CohortTruth":
        """Read ``truth.csv``; ``ValueError`` without a ``case_id`` column or with a case listed twice."""
        path = Path(path)
        table = pd.read_csv(path, dtype={"case_id": str, **{c: str for c in TRUTH_COLUMNS.values()}})
        if "case_id" not in table.columns:
            raise ValueError(f"{path} has no case_id column")
        repeated = table["case_id"][table["case_id"].duplicated()].tolist()
        if repeated:
            raise ValueError(f"{path} lists cases more than once: {repeated[:5]}")
        return cls(path, table.set_index("case_id"))

    def file(self, case_id: str, modality: str) -> Path | None:
        """The case's mask file for ``modality``, or None: case not listed, no column, empty cell, no file."""
        column = TRUTH_COLUMNS[modality]
        if case_id not in self.table.index or column not in self.table.columns:
            return None
        name = self.table.at[case_id, column]
        if not isinstance(name, str) or not name:
            return None
        file = self.path.parent / name
        return file if file.is_file() else None

    def stated_downsample(self, case_id: str) -> float | None:
        """The slide truth's downsample as ``truth.csv`` states it, if it does."""
        if DOWNSAMPLE_COLUMN not in self.table.columns:
            return None
        value = self.table.at[case_id, DOWNSAMPLE_COLUMN]
        return None if pd.isna(value) else float(value)


def find_truth(manifest: str | Path, configured: str | Path | None) -> Path | None:
    """``configured`` if given, else ``truth/truth.csv`` beside ``manifest`` when it exists, else None."""
    if configured is not None:
        return Path(configured)
    auto = Path(manifest).parent / TRUTH_FILE
    return auto if auto.is_file() else None


# --------------------------------------------------------------------------- masks


@dataclass
class TruthMask:
    """One case's planted-pattern mask and the map from its patch coordinates to mask pixels.

    ``array`` is boolean in numpy order: (rows, columns) of the slide PNG, (z, y, x) of the CT.
    Slides carry ``downsample`` (level-0 px per mask pixel), CT the mask's ``image`` (geometry).
    """

    case_id: str
    modality: str
    path: Path
    array: np.ndarray
    downsample: float | None = None
    image: sitk.Image | None = None

    def boxes(self, patches: PatchFeatures) -> tuple[np.ndarray, np.ndarray]:
        """Patch boxes on the mask: first corner ``(N, d)`` and extent ``(d,)``, x/y(/z) order.

        Pixel-edge units: mask pixel ``i`` spans ``[i, i + 1)``.
        """
        if modality_spec(self.modality).view == "slide":
            return patches.coords / self.downsample, patches.patch_size / self.downsample
        return ct_boxes(self.image, patches.coords, patches.patch_size)


def ct_boxes(image: sitk.Image, centres_mm: np.ndarray, patch_size_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CT patch boxes on ``image``'s grid (pixel-edge units, x/y/z) from their physical centres and extents.

    The extent lies along the image axes, as the encoders measure it on the preprocessed CT,
    whose direction is the original's.
    """
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = np.array(image.GetSpacing())
    to_index = np.linalg.inv(direction @ np.diag(spacing))
    centres = (np.asarray(centres_mm, float) - np.array(image.GetOrigin())) @ to_index.T
    extent = np.asarray(patch_size_mm, float) / spacing
    # SimpleITK puts voxel centres at integer indices: voxel i spans [i - 0.5, i + 0.5)
    return centres + 0.5 - extent / 2, extent


def load_mask(truth: CohortTruth, case_id: str, modality: str, image_path: Path | None) -> TruthMask | None:
    """The case's checked truth mask for ``modality`` (None without one).

    ``image_path`` is the manifest's CT (radiology) or slide (pathology) that the mask must fit.
    """
    path = truth.file(case_id, modality)
    if path is None:
        return None
    if image_path is None:
        raise CaseError(case_id, f"{path} is truth for the {modality} image, but the manifest names none")
    if modality_spec(modality).view == "slide":
        return _slide_mask(case_id, path, image_path, truth.stated_downsample(case_id))
    return _ct_mask(case_id, path, image_path)


def _slide_mask(case_id: str, path: Path, slide_path: Path, stated: float | None) -> TruthMask:
    """The PNG as booleans; its downsample from the sizes, checked against the slide and ``truth.csv``."""
    with Image.open(path) as png:
        array = np.asarray(png.convert("L")) > 127
    slide = open_slide(slide_path, case_id)
    try:
        width, height = slide.dimensions
    finally:
        slide.close()
    downsample = width / array.shape[1]
    fits = all(abs(level0 / downsample - pixels) < 1 for level0, pixels in ((height, array.shape[0]),
                                                                          (width, array.shape[1])))
    if not fits or (stated is not None and not math.isclose(stated, downsample, rel_tol=1e-3)):
        said = "" if stated is None else f", truth.csv states downsample {stated:g}"
        raise CaseError(case_id, f"slide truth {path} ({array.shape[1]}x{array.shape[0]} px) does not fit the "
                                 f"slide {slide_path} (level 0 {width}x{height} px){said}")
    return TruthMask(case_id, PATHOLOGY.name, path, array, downsample=downsample)


def _ct_mask(case_id: str, path: Path, ct_path: Path) -> TruthMask:
    """The NIfTI mask as booleans, checked to lie on the CT's voxel grid."""
    image = read_ct(path, case_id)
    try:
        check_geometry(case_id, _ct_header(ct_path, case_id), image)
    except CaseError as error:
        raise CaseError(case_id, f"CT truth {path} is not on the grid of the CT {ct_path}: {error.reason}") from error
    return TruthMask(case_id, RADIOLOGY.name, path, sitk.GetArrayFromImage(image) > 0, image=image)


def _ct_header(path: Path, case_id: str):
    """The CT's geometry (size, spacing, origin, direction) without reading its voxels, where the format allows."""
    if path.is_dir():
        return read_ct(path, case_id)  # a DICOM series has no single header
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise CaseError(case_id, f"cannot read CT {path}: {error}") from error
    return reader


# --------------------------------------------------------------------------- patches and nodes


def box_fractions(mask: np.ndarray, lo: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """Share of each box ``[lo, lo + extent)`` that ``mask`` covers.

    ``mask`` is in numpy order (``[..., y, x]``); ``lo`` ``(N, d)`` and ``extent`` ``(d,)`` in
    x/y(/z) order and pixel-edge units. Each box is sampled at the centres of
    ``ceil(extent)`` equal parts per axis (nearest pixel); samples off the mask count as uncovered.
    """
    lo = np.asarray(lo, float)
    extent = np.asarray(extent, float)
    counts = np.maximum(np.ceil(np.round(extent, 6)).astype(int), 1)
    axes = [(np.arange(n) + 0.5) / n * e for n, e in zip(counts, extent)]
    offsets = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(extent))
    size = np.array(mask.shape[::-1])
    by_xyz = mask.T  # [x, y(, z)]
    fractions = np.empty(len(lo))
    step = max(1, SAMPLES_PER_CHUNK // len(offsets))
    for start in range(0, len(lo), step):
        points = np.floor(lo[start:start + step, None, :] + offsets[None]).astype(np.int64)
        inside = ((points >= 0) & (points < size)).all(axis=-1)
        points = np.clip(points, 0, size - 1)
        covered = by_xyz[tuple(points[..., axis] for axis in range(len(size)))] & inside
        fractions[start:start + step] = covered.mean(axis=1)
    return fractions


def patch_fractions(mask: TruthMask, patches: PatchFeatures) -> np.ndarray:
    """Planted fraction of every patch; :class:`CaseError` when patch centres fall off the mask."""
    lo, extent = mask.boxes(patches)
    centres = lo + extent / 2
    outside = int((~((centres >= 0) & (centres < mask.array.shape[::-1])).all(axis=1)).sum())
    if outside:
        raise CaseError(mask.case_id, f"{outside} of {len(centres)} {mask.modality} patch centres fall outside the "
                                      f"truth {mask.path}: the patch features and the truth are not in one frame")
    return box_fractions(mask.array, lo, extent)


@dataclass
class NodeTruth:
    """Per node of one graph: its planted fraction and planted label; per patch its node's fraction."""

    fraction: np.ndarray
    planted: np.ndarray
    patch_fraction: np.ndarray  # fraction[assignment]: what an overlay paints on each patch


def node_truth(case_id: str, patch_fraction: np.ndarray, assignment: np.ndarray, n_nodes: int,
               planted_fraction: float) -> NodeTruth:
    """Area-weighted planted fraction of each node over its patches, and ``fraction >= planted_fraction``."""
    assignment = np.asarray(assignment, dtype=np.int64)
    if len(assignment) != len(patch_fraction):
        raise CaseError(case_id, f"the graph assigns {len(assignment)} patches but the truth covers "
                                 f"{len(patch_fraction)}")
    patches = np.bincount(assignment, minlength=n_nodes)
    if len(patches) > n_nodes or (patches == 0).any():
        raise CaseError(case_id, f"graph assignment does not map its patches onto its {n_nodes} nodes")
    fraction = np.bincount(assignment, weights=patch_fraction, minlength=n_nodes) / patches
    return NodeTruth(fraction, fraction >= planted_fraction, fraction[assignment])
