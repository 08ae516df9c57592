"""The cohort manifest: one CSV row per patient.

Columns (only ``case_id`` is required; a stage checks for the columns it needs):

=================  ==========================================================
``case_id``        unique patient identifier (text)
``ct``, ``mask``   CT volume and tumour mask (NIfTI, NRRD or a DICOM folder)
``wsi``            whole-slide image that OpenSlide opens
``os_time``        overall survival time (> 0; unit stated in the config)
``os_event``       1 = death observed, 0 = censored
``malignant``      1 malignant, 0 benign
``isup_grade``     ISUP grade 1-4 (empty for benign tumours)
``high_grade``     1 = ISUP 3-4, 0 = ISUP 1-2 (empty for benign tumours)
``aggressive``     1 aggressive, 0 indolent (empty for benign tumours)
``age``, ``sex``,  clinical covariates
``tumour_size_mm``
``pathology_        optional: an HDF5 feature bag of the case's slide in the
features``         CLAM/Trident layout (:mod:`radiopath.encoders.bags`); the
                   graph is built from it, without encoding (and without the
                   slide, which is only read for its resolution and size)
``mpp``            optional: µm per level-0 pixel of the case's slide (> 0);
                   where given it overrides the slide's own metadata and the
                   bag's attributes (``wsi.fallback_mpp`` is the last resort)
=================  ==========================================================

Image and bag paths are relative to the manifest's folder. A path that leads outside that
folder (absolute, ``..``, or a symlink out) is refused when a stage opens it,
unless the manifest is loaded with ``allow_outside=True`` (``data.allow_outside_paths``).
Rows with a problem are not dropped silently: :func:`load_manifest` returns them
as :class:`~radiopath.errors.CaseError` objects that every stage reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from radiopath.errors import CaseError, ManifestError
from radiopath.modality import MODALITIES

# Every modality's image columns (ct, mask, wsi) and bag columns (pathology_features):
# paths resolved and checked to exist.
IMAGE_COLUMNS = tuple(column for spec in MODALITIES.values() for column in spec.image_columns)
PATH_COLUMNS = IMAGE_COLUMNS + tuple(spec.bag_column for spec in MODALITIES.values() if spec.bag_column)
MPP_COLUMN = "mpp"


@dataclass
class Manifest:
    """A validated cohort: usable rows plus the cases rejected and why."""

    path: Path
    frame: pd.DataFrame
    problems: list[CaseError] = field(default_factory=list)
    allow_outside: bool = False

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def case_ids(self) -> list[str]:
        return self.frame["case_id"].tolist()

    def has(self, case_id: str, column: str) -> bool:
        """True when the manifest has ``column`` and the case's cell in it is not empty."""
        return column in self.frame.columns and self._cell(case_id, column) != ""

    def mpp(self, case_id: str) -> float | None:
        """The case's ``mpp`` column (µm per level-0 pixel of its slide), None when not given."""
        return float(self._cell(case_id, MPP_COLUMN)) if self.has(case_id, MPP_COLUMN) else None

    def _cell(self, case_id: str, column: str):
        value = self.frame.loc[self.frame["case_id"] == case_id, column].iloc[0]
        return "" if pd.isna(value) else value

    def image_path(self, case_id: str, column: str) -> Path | None:
        """Absolute path of one case's image (or bag), or None when the column or the cell is empty.

        Raises :class:`CaseError` when the path leads outside the manifest's folder
        and ``allow_outside`` is off: a manifest must not make a stage read arbitrary files.
        """
        value = self._cell(case_id, column) if column in self.frame.columns else ""
        if not isinstance(value, str) or not value:
            return None
        path = Path(value)
        if not self.allow_outside and not path.resolve().is_relative_to(self.root):
            raise CaseError(case_id, f"{column} path {path} is outside the manifest's folder {self.root} "
                                     "(set data.allow_outside_paths=true to allow it)")
        return path

    def select_shard(self, shard: int, num_shards: int) -> "Manifest":
        """Every ``num_shards``-th case starting at ``shard`` (for cluster jobs)."""
        if not 0 <= shard < num_shards:
            raise ValueError(f"shard must be in [0, {num_shards}), got {shard}")
        frame = self.frame.iloc[shard::num_shards].reset_index(drop=True)
        return Manifest(self.path, frame, self.problems, self.allow_outside)


def load_manifest(path: str | Path, required: tuple[str | tuple[str, ...], ...] = (),
                  allow_outside: bool = False) -> Manifest:
    """Read and validate a cohort manifest.

    ``required`` names columns that must exist (besides ``case_id``); an entry that
    is a tuple of names needs one of them (``("wsi", "pathology_features")``). Image paths
    are made absolute; duplicated ids, bad survival values and missing image
    files are returned as problems, and those rows are left out of ``frame``.
    ``allow_outside`` lets image paths lead outside the manifest's folder.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    frame = pd.read_csv(path, dtype={"case_id": str})
    missing = [" or ".join(c) if isinstance(c, tuple) else c for c in ("case_id", *required)
               if not set((c,) if isinstance(c, str) else c) & set(frame.columns)]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {', '.join(missing)}")

    problems: list[CaseError] = []
    bad = pd.Series(False, index=frame.index)

    ids = frame["case_id"].fillna("").astype(str).str.strip()
    frame["case_id"] = ids
    for row in frame.index[ids == ""]:
        problems.append(CaseError(f"<row {row + 2}>", "empty case_id"))
        bad[row] = True
    duplicated = ids.duplicated(keep=False) & (ids != "")
    for case_id in sorted(set(ids[duplicated])):
        count = int((ids == case_id).sum())
        problems.append(CaseError(case_id, f"case_id appears {count} times in the manifest"))
    bad |= duplicated

    for column in PATH_COLUMNS:
        if column in frame.columns:
            frame[column] = [_resolve(path.parent, value) for value in frame[column]]

    for row in frame.index[~bad]:
        reason = _row_problem(frame.loc[row])
        if reason:
            problems.append(CaseError(frame.at[row, "case_id"], reason))
            bad[row] = True

    return Manifest(path, frame.loc[~bad].reset_index(drop=True), problems, allow_outside)


def _resolve(root: Path, value) -> str:
    if not isinstance(value, str) or not value.strip():
        return ""
    candidate = Path(value.strip())
    return str(candidate if candidate.is_absolute() else (root / candidate).resolve())


def _shown(value):
    """A cell as the manifest shows it (numpy scalars as plain numbers) for messages."""
    return value.item() if isinstance(value, np.generic) else value


def _row_problem(row: pd.Series) -> str | None:
    """The first thing wrong with one manifest row, or None."""
    if "os_time" in row.index and not pd.isna(row["os_time"]):
        time = pd.to_numeric(row["os_time"], errors="coerce")
        if not np.isfinite(time) or time <= 0:
            return f"os_time must be a positive number, got {_shown(row['os_time'])!r}"
    if "os_event" in row.index and not pd.isna(row["os_event"]):
        if pd.to_numeric(row["os_event"], errors="coerce") not in (0, 1):
            return f"os_event must be 0 or 1, got {_shown(row['os_event'])!r}"
    if MPP_COLUMN in row.index and not pd.isna(row[MPP_COLUMN]):
        mpp = pd.to_numeric(row[MPP_COLUMN], errors="coerce")
        if not np.isfinite(mpp) or mpp <= 0:
            return f"mpp must be a positive number (µm per level-0 pixel), got {_shown(row[MPP_COLUMN])!r}"
    for column in PATH_COLUMNS:
        value = row.get(column, "")
        if value and not Path(value).exists():
            return f"{column} file not found: {value}"
    return None
