"""Patient-level cross-validation folds: the one definition training, tuning and the survival stage share.

Folds are drawn once per cohort and written to ``RUN/folds.csv`` by the training stage
(:mod:`radiopath.training.folds`); the survival stage draws the same folds for a
feature table without a run, and tuning draws inner folds of a fold's training
patients, all with :func:`make_folds`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold


def make_folds(case_ids: list[str], events: np.ndarray, *, n_folds: int, seed: int) -> pd.DataFrame:
    """Disjoint folds stratified on the event indicator: ``case_id, fold``.

    Every patient is in exactly one test fold. Stratification keeps the share of
    events similar across folds, so no test fold is left without deaths when the
    cohort has at least ``n_folds`` of them.
    """
    events = np.asarray(events, dtype=int)
    if len(case_ids) < n_folds:
        raise ValueError(f"{len(case_ids)} patients cannot make {n_folds} folds")
    # StratifiedKFold needs every class n_folds times; otherwise fall back to plain shuffling.
    counts = np.bincount(events, minlength=2)
    if counts.min() >= n_folds:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(events)), events)
    else:
        order = np.random.default_rng(seed).permutation(len(case_ids))
        splits = ((None, part) for part in np.array_split(order, n_folds))
    fold = np.empty(len(case_ids), dtype=int)
    for k, (_, test) in enumerate(splits):
        fold[test] = k
    return pd.DataFrame({"case_id": list(case_ids), "fold": fold})
