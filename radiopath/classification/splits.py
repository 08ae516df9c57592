"""Patient-level splits: a stratified held-out test part and stratified folds on the rest."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

TEST = -1  # the fold number of held-out test cases


def make_splits(case_ids, y: np.ndarray, test_fraction: float, n_folds: int, seed: int) -> pd.DataFrame:
    """``case_id, y, fold``: fold ``-1`` is the held-out test part, ``0..n_folds-1`` the CV folds.

    Both parts are stratified on ``y``. Each class needs at least ``n_folds`` training
    cases and one test case, or the split says which class is short.
    """
    case_ids = np.asarray(case_ids, dtype=str)
    y = np.asarray(y, dtype=int)
    if len(set(case_ids)) != len(case_ids):
        raise ValueError("case ids must be unique for patient-level splits")
    if not 0 < test_fraction < 1 or n_folds < 2:
        raise ValueError(f"need 0 < test_fraction < 1 and n_folds >= 2, got {test_fraction} and {n_folds}")
    counts = np.bincount(y, minlength=2)
    needed = int(np.ceil(n_folds / (1 - test_fraction))) + 1
    if counts.min() < needed:
        raise ValueError(
            f"{counts[0]} negative and {counts[1]} positive cases: each class needs at least {needed} "
            f"for a {test_fraction:g} test part and {n_folds} stratified folds"
        )
    index = np.arange(len(y))
    dev, test = train_test_split(index, test_size=test_fraction, stratify=y, random_state=seed)
    fold = np.full(len(y), TEST)
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, held_out) in enumerate(cv.split(dev, y[dev])):
        fold[dev[held_out]] = k
    return pd.DataFrame({"case_id": case_ids, "y": y, "fold": fold})
