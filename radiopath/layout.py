"""Every on-disk path and column the stages share, in one place.

The stages talk through files; this module names them. Writers and readers both
use it, so a file moved or a column renamed here moves everywhere.

Feature store (``encode``)
    ``{features_dir}/{modality}/{encoder}/{case_id}.pt``, ``encoder`` from
    :func:`encoder_dirname` (``timm:vit_small`` -> ``timm-vit_small``); slide features
    written with ``encode.format=h5`` are ``{case_id}.h5`` there instead (:func:`bag_path`,
    an HDF5 bag in the CLAM/Trident layout). A case has one of the two (:func:`stored_features`).
    A patient with several slides has one file per slide, ``{case_id}/{slide}.pt`` (or ``.h5``),
    ``slide`` the slide's name (:func:`slide_keys`).
Graph store (``build_graphs``)
    ``{graph_dir}/{modality}/{case_id}.pt``.
Training run folder (``train``, read by ``survival`` and ``report``), :class:`RunFolder`
    ``config.yaml``, ``folds.csv`` (``case_id, fold``), ``fold{k}/model.pt``,
    ``fold{k}/history.csv``, ``fold{k}/vectors.csv`` (``case_id, split, risk, v0 … vD``),
    ``fold{k}/importance/{case_id}.pt``, ``fold{k}/tuning.csv``, ``survival/``.
Survival folder (``survival``, read by ``report``), :class:`SurvivalFolder`
    ``metrics.csv``, ``summary.csv``, ``predictions.csv``, ``settings.json``,
    ``logrank.csv``, ``km_{model}.png``, ``folds.csv`` when the folds were made there.
Export folder (``export``, default ``RUN/export/``), :class:`ExportFolder`
    ``fold{k}/{case_id}/``: ``{slide}.geojson``, ``{slide}.png``, ``{ct}_importance.nii.gz``,
    ``export.json`` (written last).
Every stage's output folder
    ``run_record.json`` (:mod:`radiopath.repro`) and ``failures.csv``; a job that
    does one shard or some folds of a stage writes its own copies (:func:`part_filename`).
"""

from __future__ import annotations

import re
from pathlib import Path

from radiopath.io import is_temporary

RECORD_NAME = "run_record.json"
RECORD_GLOB = "run_record*.json"  # the record of a whole stage and those of its shard or fold jobs
FAILURES_NAME = "failures.csv"
VECTOR_PREFIX = "v"
_VECTOR_COLUMN = re.compile(rf"{VECTOR_PREFIX}\d+")
_FOLD_DIR = re.compile(r"fold(\d+)")


# --- feature and graph stores ---------------------------------------------------------------


def encoder_dirname(name: str) -> str:
    """Folder name for an encoder (``timm:resnet18`` -> ``timm-resnet18``)."""
    return name.replace(":", "-").replace("/", "-")


def features_dir(root: str | Path, modality: str, encoder: str) -> Path:
    """The folder of one modality's features from one encoder (``encoder`` as configured)."""
    return Path(root) / modality / encoder_dirname(encoder)


def slide_keys(names: list[str]) -> list[str | None]:
    """The ``slide`` argument of the feature-store paths for each of a patient's slides.

    None for a patient's only slide (its file is ``{case_id}.pt``); the slide's name when
    the patient has several (``{case_id}/{name}.pt``).
    """
    return [None] if len(names) == 1 else list(names)


def _case_file(root: str | Path, modality: str, encoder: str, case_id: str, slide: str | None, suffix: str) -> Path:
    folder = features_dir(root, modality, encoder)
    return folder / f"{case_id}{suffix}" if slide is None else folder / case_id / f"{slide}{suffix}"


def features_path(root: str | Path, modality: str, encoder: str, case_id: str, *, slide: str | None = None) -> Path:
    """Where the features of one case (or of one of its slides, :func:`slide_keys`) and encoder live."""
    return _case_file(root, modality, encoder, case_id, slide, ".pt")


def bag_path(root: str | Path, modality: str, encoder: str, case_id: str, *, slide: str | None = None) -> Path:
    """Where those features live as an HDF5 bag (``encode.format=h5``)."""
    return _case_file(root, modality, encoder, case_id, slide, ".h5")


def feature_file(root: str | Path, modality: str, encoder: str, case_id: str, *, format: str,
                 slide: str | None = None) -> Path:
    """The feature file of one case (or slide) in ``format`` (one of :data:`FEATURE_FORMATS`)."""
    return FEATURE_FORMATS[format](root, modality, encoder, case_id, slide=slide)


def stored_features(root: str | Path, modality: str, encoder: str, case_id: str, *,
                    slide: str | None = None) -> Path | None:
    """The case's (or slide's) feature file that exists (``.pt`` or ``.h5``), None when neither does."""
    return next((path for make in FEATURE_FORMATS.values()
                 if (path := make(root, modality, encoder, case_id, slide=slide)).is_file()), None)


def graph_path(graph_dir: str | Path, modality: str, case_id: str) -> Path:
    """Where one case's graph of one modality lives."""
    return Path(graph_dir) / modality / f"{case_id}.pt"


FEATURE_FORMATS = {"pt": features_path, "h5": bag_path}


# --- names of a job's own files ---------------------------------------------------------------


def part_filename(name: str, *, shard: int = 0, num_shards: int = 1, folds: list[int] | None = None) -> str:
    """``name`` for a whole-stage job; ``{stem}_shard{i}of{n}.{ext}`` or ``{stem}_fold{k}.{ext}`` for a part.

    Jobs of one stage share its output folder: per-part names keep them from
    overwriting each other's record and failures (``_fold0+2`` for a list of folds).
    """
    stem, ext = name.split(".", 1)
    if folds is not None:
        return f"{stem}_fold{'+'.join(map(str, folds))}.{ext}"
    if num_shards > 1:
        return f"{stem}_shard{shard}of{num_shards}.{ext}"
    return name


# --- vectors.csv columns --------------------------------------------------------------------


def vector_columns(width: int) -> list[str]:
    """The names of a patient vector's ``width`` columns: ``v0 … v{width-1}``."""
    return [f"{VECTOR_PREFIX}{i}" for i in range(width)]


def is_vector_column(name: str) -> bool:
    """True for ``v0``, ``v17``; false for ``risk``, ``split`` and other columns."""
    return bool(_VECTOR_COLUMN.fullmatch(str(name)))


# --- folders ----------------------------------------------------------------------------------


class _File:
    """A file of a folder class: ``folder.metrics`` -> ``folder.root / "metrics.csv"``."""

    def __init__(self, name: str, doc: str = ""):
        self.name, self.__doc__ = name, doc

    def __get__(self, folder, owner=None):
        return self if folder is None else folder.root / self.name


class _Folder:
    """A folder whose files are :class:`_File` attributes."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"


class RunFolder(_Folder):
    """The files of one training run (``train``'s ``output_dir``)."""

    config = _File("config.yaml", "the run's resolved configuration, cohort paths absolute")
    folds = _File("folds.csv", "case_id, fold: the patient-level folds every stage of the run shares")
    survival = _File("survival", "the survival stage's folder (a :class:`SurvivalFolder`)")

    def fold(self, k: int) -> Path:
        return self.root / f"fold{k}"

    def model(self, k: int) -> Path:
        return self.fold(k) / "model.pt"

    def history(self, k: int) -> Path:
        return self.fold(k) / "history.csv"

    def vectors(self, k: int) -> Path:
        """Written last by training: its presence marks fold ``k`` finished."""
        return self.fold(k) / "vectors.csv"

    def tuning(self, k: int) -> Path:
        return self.fold(k) / "tuning.csv"

    def importance(self, k: int, case_id: str) -> Path:
        return self.fold(k) / "importance" / f"{case_id}.pt"

    def fold_dirs(self) -> list[tuple[int, Path]]:
        """``(k, fold{k}/)`` of the folds present, by ``k``."""
        found = []
        if self.root.is_dir():
            for path in self.root.iterdir():
                match = _FOLD_DIR.fullmatch(path.name)
                if match and path.is_dir():
                    found.append((int(match.group(1)), path))
        return sorted(found)

    def importance_files(self) -> dict[str, Path]:
        """case_id -> its importance file (each case is a test patient of one fold).

        The leftovers of interrupted writes are skipped: their names are not case ids.
        """
        return {file.stem: file for _, fold_dir in self.fold_dirs()
                for file in sorted((fold_dir / "importance").glob("*.pt")) if not is_temporary(file)}


def fold_of(path: str | Path) -> int:
    """``k`` of the ``fold{k}/`` folder that ``path`` lies in (``RUN/fold2/importance/c.pt`` -> 2)."""
    for part in reversed(Path(path).parts):
        match = _FOLD_DIR.fullmatch(part)
        if match:
            return int(match.group(1))
    raise ValueError(f"{path} is not inside a fold{{k}} folder")


class SurvivalFolder(_Folder):
    """The files of one survival benchmark (``survival``'s output folder)."""

    metrics = _File("metrics.csv", "one row per fold, model and metric")
    summary = _File("summary.csv", "mean, sd and number of folds per model and metric")
    predictions = _File("predictions.csv", "each test patient's risk per fold and model")
    settings = _File("settings.json", "tau, grids, the chosen hyperparameters per fold, seeds, config")
    logrank = _File("logrank.csv", "Kaplan-Meier risk groups: log-rank test per model")
    folds = _File("folds.csv", "only when the survival stage made the folds (a feature table without a run)")

    def km_figure(self, model: str) -> Path:
        return self.root / f"km_{model}.png"


class ExportFolder(_Folder):
    """The overlays of ``python -m radiopath.export`` (default ``RUN/export/``)."""

    def case(self, fold: int, case_id: str) -> Path:
        """Every file exported for one test patient: ``fold{k}/{case_id}/``."""
        return self.root / f"fold{fold}" / case_id

    def done(self, fold: int, case_id: str) -> Path:
        """``export.json``, written last: the files and their inputs; marks the patient finished."""
        return self.case(fold, case_id) / "export.json"
