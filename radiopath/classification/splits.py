"""Patient-level splits: a stratified held-out test part and stratified folds on the rest,
optionally from some centres only, with every case of the other centres an external test cohort."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

TEST = -1  # the fold number of every case no model is fitted on: the test part and external cases
PARTS = ("cv", "test", "external")  # the ``part`` column: CV fold, held-out test part, external centre


def make_splits(case_ids, y: np.ndarray, test_fraction: float, n_folds: int, seed: int) -> pd.DataFrame:
    """``case_id, y, fold, part``: fold ``-1`` (part ``test``) is the held-out test part, ``0..n_folds-1`` the CV folds.

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
    return pd.DataFrame({"case_id": case_ids, "y": y, "fold": fold,
                         "part": np.where(fold == TEST, "test", "cv")})


def centre_splits(*, case_ids, y: np.ndarray, centres: Sequence[str], train_centres: Sequence[str],
                  test_centres: Sequence[str], test_fraction: float, n_folds: int, seed: int) -> pd.DataFrame:
    """:func:`make_splits` on the cases of ``train_centres``; the cases of ``test_centres`` are ``external``.

    Every case must belong to one of the two lists (the caller leaves out and lists the others);
    the rows keep the order of ``case_ids`` and gain a ``centre`` column.
    """
    centres = np.asarray(centres, dtype=str)
    train, external = np.isin(centres, list(train_centres)), np.isin(centres, list(test_centres))
    if not (train ^ external).all():
        raise ValueError("every case needs a centre in exactly one of train_centres and test_centres")
    if not external.any():
        raise ValueError(f"no case of the test centres {list(test_centres)}")
    case_ids, y = np.asarray(case_ids, dtype=str), np.asarray(y, dtype=int)
    inside = make_splits(case_ids[train], y[train], test_fraction, n_folds, seed)
    outside = pd.DataFrame({"case_id": case_ids[external], "y": y[external], "fold": TEST, "part": "external"})
    order = pd.Series(np.arange(len(case_ids)), index=case_ids)
    splits = pd.concat([inside, outside], ignore_index=True)
    splits = splits.iloc[np.argsort(order[splits["case_id"]].to_numpy())].reset_index(drop=True)
    return splits.assign(centre=centres)
