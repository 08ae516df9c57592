"""The cohort manifest: one CSV row per patient.

Columns (only ``case_id`` is required; a stage checks for the columns it needs):

=================  ==========================================================
``case_id``        unique patient identifier (text)
``ct``, ``mask``   CT volume and tumour mask (NIfTI, NRRD or a DICOM folder)
``wsi``            whole-slide image that OpenSlide opens; several slides of one
                   patient are ``;``-separated (``wsi/p1_A.svs;wsi/p1_B.svs``)
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
                   slide, which is only read for its resolution and size);
                   ``;``-separated for several slides, in the order of ``wsi``
``centre``         optional: the case's centre (or cohort); ``evaluation=by_centre``
                   trains on ``train_centres`` and reports each of ``test_centres``
                   as an external test cohort (``evaluation.centre_column``)
``dss_time``,      optional: disease-specific survival (death from the renal
``dss_event``      tumour), same unit as ``os_time``; 1 = event observed
``rfs_time``,      optional: recurrence-free survival (local recurrence, distant
``rfs_event``      metastasis or death from the tumour); 1 = event observed
``tnm_stage``      optional: AJCC stage group 1-4 (empty for benign tumours)
``histology``      optional: histologic subtype (text, e.g. clear_cell)
``reader_<name>``  optional: one reader's 0/1 calls of the task's label
                   (``task.reader_prefix``; the demo's readers call malignancy)
``phase_<name>``   optional: a further CT phase (image path), named in the
                   multi-phase pipeline's ``phases``
``mpp``            optional: µm per level-0 pixel of the case's slide (> 0);
                   where given it overrides the slide's own metadata and the
                   bag's attributes (``wsi.fallback_mpp`` is the last resort);
                   one value for all the case's slides or one per slide
                   (``0.25;0.5``); an empty entry (``0.25;``) leaves that slide to its
                   own metadata
=================  ==========================================================

A patient's slides (:meth:`Manifest.slides`) are named by their file stems, which must
differ; each slide gets its own graph and the patient's pathology input is all of them
(:mod:`radiopath.graphs.build`), so folds, which split patients, never split a patient's slides.

Image, bag and ``phase_<name>`` paths are relative to the manifest's folder. A path that leads outside that
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

from radiopath.data.readers import image_stem
from radiopath.errors import CaseError, ManifestError
from radiopath.modality import MODALITIES, PATHOLOGY

# Every modality's image columns (ct, mask, wsi) and bag columns (pathology_features):
# paths resolved and checked to exist.
IMAGE_COLUMNS = tuple(column for spec in MODALITIES.values() for column in spec.image_columns)
PATH_COLUMNS = IMAGE_COLUMNS + tuple(spec.bag_column for spec in MODALITIES.values() if spec.bag_column)
MPP_COLUMN = "mpp"
SEPARATOR = ";"  # between the paths (and mpp values) of a patient's slides
PHASE_PREFIX = "phase_"  # further CT phases: image paths too


def path_columns(columns) -> list[str]:
    """The manifest's columns that hold paths: the modalities' images and bags, and ``phase_<name>`` images."""
    return [c for c in PATH_COLUMNS if c in columns] + [c for c in columns if str(c).startswith(PHASE_PREFIX)]


@dataclass(frozen=True)
class SlideSource:
    """One slide of a patient as the manifest gives it: its name, its image and/or bag, its stated mpp."""

    name: str
    wsi: Path | None
    bag: Path | None
    mpp: float | None


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

    def slides(self, case_id: str) -> list[SlideSource]:
        """The case's slides, in the manifest's order (one per ``wsi`` or ``pathology_features`` entry).

        Raises :class:`CaseError` when a path leads outside the manifest's folder (see :meth:`image_path`).
        """
        images = self.image_paths(case_id, PATHOLOGY.image_column)
        bags = self.image_paths(case_id, PATHOLOGY.bag_column)
        mpps = _split(self._cell(case_id, MPP_COLUMN) if MPP_COLUMN in self.frame.columns else "")
        count = max(len(images), len(bags))
        mpps = mpps * count if len(mpps) == 1 else mpps
        return [SlideSource(name=_slide_name(images, bags, k), wsi=images[k] if images else None,
                            bag=bags[k] if bags else None, mpp=float(mpps[k]) if mpps and mpps[k] else None)
                for k in range(count)]

    def _cell(self, case_id: str, column: str):
        value = self.frame.loc[self.frame["case_id"] == case_id, column].iloc[0]
        return "" if pd.isna(value) else value

    def image_paths(self, case_id: str, column: str) -> list[Path]:
        """Every path of one case's cell in ``column`` (several slides are ``;``-separated); [] when empty.

        Raises :class:`CaseError` when a path leads outside the manifest's folder and
        ``allow_outside`` is off: a manifest must not make a stage read arbitrary files.
        """
        value = self._cell(case_id, column) if column in self.frame.columns else ""
        paths = [Path(part) for part in _split(value)]
        for path in paths:
            if not self.allow_outside and not path.resolve().is_relative_to(self.root):
                raise CaseError(case_id, f"{column} path {path} is outside the manifest's folder {self.root} "
                                         "(set data.allow_outside_paths=true to allow it)")
        return paths

    def image_path(self, case_id: str, column: str) -> Path | None:
        """Absolute path of one case's image (or bag), or None when the column or the cell is empty.

        Raises :class:`CaseError` when the path leads outside the manifest's folder (see
        :meth:`image_paths`), or when the cell names several slides: use :meth:`slides` for those.
        """
        paths = self.image_paths(case_id, column)
        if len(paths) > 1:
            raise CaseError(case_id, f"{column} names {len(paths)} files; this step reads one image per case")
        return paths[0] if paths else None

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

    for column in path_columns(frame.columns):
        frame[column] = [_resolve(path.parent, value) for value in frame[column]]

    for row in frame.index[~bad]:
        reason = _row_problem(frame.loc[row])
        if reason:
            problems.append(CaseError(frame.at[row, "case_id"], reason))
            bad[row] = True

    return Manifest(path, frame.loc[~bad].reset_index(drop=True), problems, allow_outside)


def _split(value) -> list[str]:
    """A cell's ``;``-separated entries, stripped ([] for an empty cell; a single entry for a plain one)."""
    if isinstance(value, (int, float, np.number)) and not pd.isna(value):
        return [str(value)]
    if not isinstance(value, str) or not value.strip():
        return []
    return [part.strip() for part in value.split(SEPARATOR)]


def _resolve(root: Path, value) -> str:
    """The cell's paths made absolute against the manifest's folder, ``;``-joined again."""
    return SEPARATOR.join(str(Path(part) if Path(part).is_absolute() else (root / part).resolve())
                          for part in _split(value))


def _slide_name(images: list[Path], bags: list[Path], index: int) -> str:
    """A slide's name: its image's file stem, else its bag's."""
    return image_stem(images[index] if images else bags[index])


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
    for column in path_columns(row.index):
        for value in _split(row.get(column, "")):
            if not Path(value).exists():
                return f"{column} file not found: {value}"
    return _slides_problem(row)


def _slides_problem(row: pd.Series) -> str | None:
    """What is wrong with the row's slides: counts that do not pair up, a bad mpp, two slides of one name."""
    images = _split(row.get(PATHOLOGY.image_column, ""))
    bags = _split(row.get(PATHOLOGY.bag_column, ""))
    mpps = _split(row.get(MPP_COLUMN, ""))
    if images and bags and len(images) != len(bags):
        return (f"{PATHOLOGY.image_column} names {len(images)} slides but {PATHOLOGY.bag_column} {len(bags)} bags: "
                "give one bag per slide, in the same order")
    count = max(len(images), len(bags))
    if len(mpps) > 1 and len(mpps) != count:
        return f"mpp gives {len(mpps)} values for {count} slides: give one value, or one per slide"
    for value in mpps:
        mpp = pd.to_numeric(value, errors="coerce")
        if value and (not np.isfinite(mpp) or mpp <= 0):
            return f"mpp must be a positive number (µm per level-0 pixel), got {_shown(row[MPP_COLUMN])!r}"
    names = [image_stem(path) for path in (images or bags)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        return f"two of the case's slides are both called {repeated[0]!r}: slides are told apart by file name"
    return None
