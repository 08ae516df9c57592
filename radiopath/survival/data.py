"""Inputs of the survival benchmark: per-fold feature tables with survival times.

Two sources give the same :class:`SurvivalFold` objects:

- a training run folder (:class:`~radiopath.layout.RunFolder`): ``folds.csv``
  (case_id, fold) and ``fold{k}/vectors.csv`` (case_id, split, risk, v0 ... vD),
  with times from the cohort manifest; the features of fold k come from fold k's model;
- a feature table (case_id, os_time, os_event, features...), split by a run's
  ``folds.csv`` or by new event-stratified folds (:func:`stratified_folds`, the
  training stage's own way of making them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sksurv.util import Surv

from radiopath.layout import RunFolder, is_vector_column
from radiopath.folds import make_folds

log = logging.getLogger(__name__)

SURVIVAL_COLUMNS = ("os_time", "os_event")


@dataclass
class SurvivalFold:
    """One outer fold: features, survival and case ids of its training and test parts."""

    fold: int
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: np.ndarray  # scikit-survival structured array (event, time)
    y_test: np.ndarray
    ids_train: np.ndarray
    ids_test: np.ndarray


def read_survival(path: str | Path) -> pd.DataFrame:
    """``case_id, os_time, os_event`` from a manifest or feature table, checked row by row."""
    frame = pd.read_csv(path, dtype={"case_id": str})
    missing = [c for c in ("case_id", *SURVIVAL_COLUMNS) if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    duplicated = frame["case_id"][frame["case_id"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"{path}: duplicated case_id {', '.join(map(str, duplicated))}")
    time = pd.to_numeric(frame["os_time"], errors="coerce")
    event = pd.to_numeric(frame["os_event"], errors="coerce")
    bad = ~(time > 0) | ~event.isin([0, 1])
    if bad.any():
        raise ValueError(
            f"{path}: os_time must be > 0 and os_event 0 or 1; bad rows: {', '.join(frame['case_id'][bad])}"
        )
    frame["os_time"], frame["os_event"] = time.astype(float), event.astype(int)
    return frame.set_index("case_id")


def read_folds(path: str | Path) -> pd.Series:
    """``folds.csv`` as a Series case_id -> fold."""
    folds = pd.read_csv(path, dtype={"case_id": str})
    if folds["case_id"].duplicated().any():
        raise ValueError(f"{path}: a patient appears in more than one fold")
    return folds.set_index("case_id")["fold"].astype(int)


def stratified_folds(survival: pd.DataFrame, *, n_folds: int, seed: int) -> pd.Series:
    """case_id -> fold for a table indexed by case_id: the folds training would make for these patients.

    Stratified on ``os_event`` and reproducible from ``seed``
    (:func:`radiopath.folds.make_folds`).
    """
    folds = make_folds(list(survival.index), survival["os_event"].to_numpy(), n_folds=n_folds, seed=seed)
    return pd.Series(folds["fold"].to_numpy(), index=survival.index, name="fold")


def _split(fold: int, features: pd.DataFrame, survival: pd.DataFrame, is_test: np.ndarray) -> SurvivalFold:
    missing = features.index.difference(survival.index)
    if len(missing):
        raise ValueError(f"fold {fold}: no survival data for case(s) {', '.join(missing)}")
    non_numeric = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric:
        raise ValueError(f"fold {fold}: non-numeric feature column(s) {', '.join(non_numeric)} (one-hot encode them)")
    incomplete = features.index[features.isna().any(axis=1)]
    if len(incomplete):
        raise ValueError(f"fold {fold}: missing feature values for case(s) {', '.join(incomplete)}")
    y = survival.loc[features.index]
    structured = Surv.from_arrays(event=y["os_event"].to_numpy(bool), time=y["os_time"].to_numpy())
    ids = features.index.to_numpy()
    return SurvivalFold(
        fold,
        features[~is_test],
        features[is_test],
        structured[~is_test],
        structured[is_test],
        ids[~is_test],
        ids[is_test],
    )


def folds_from_table(table: pd.DataFrame, folds: pd.Series) -> list[SurvivalFold]:
    """Split a feature table (indexed by case_id, survival columns included) by ``folds``."""
    missing = table.index.difference(folds.index)
    if len(missing):
        raise ValueError(f"case(s) without a fold: {', '.join(missing)}")
    unused = folds.index.difference(table.index)
    if len(unused):
        log.warning("%d patient(s) of folds.csv are not in the feature table: %s", len(unused), ", ".join(unused))
    features = table.drop(columns=list(SURVIVAL_COLUMNS))
    folds = folds.loc[table.index]
    return [_split(k, features, table, (folds == k).to_numpy()) for k in sorted(folds.unique())]


def folds_from_run(run_dir: str | Path, survival: pd.DataFrame) -> list[SurvivalFold]:
    """Read every ``fold{k}/vectors.csv`` of a training run; checks its split against ``folds.csv``."""
    run = RunFolder(run_dir)
    folds = read_folds(run.folds)
    result = []
    for k in sorted(folds.unique()):
        path = run.vectors(int(k))
        vectors = pd.read_csv(path, dtype={"case_id": str}).set_index("case_id")
        is_test = (vectors["split"] == "test").to_numpy()
        expected = set(folds.index[folds == k])
        if set(vectors.index[is_test]) != expected:
            raise ValueError(f"{path}: the test patients differ from fold {k} of folds.csv")
        features = vectors[[c for c in vectors.columns if is_vector_column(c)]]
        result.append(_split(int(k), features, survival, is_test))
    return result
