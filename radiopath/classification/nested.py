"""Nested cross-validation: a pipeline's hyperparameters tuned inside one training part.

As in the multimodal RF/MLP paper, the outer loop gives the performance and the inner
loop picks the hyperparameters: every point of a pipeline's ``grid`` (kwargs key, dotted
for nested kwargs, -> values) is scored by the mean ROC AUC of stratified inner folds of
the outer training part; the best point (the first among ties) is refitted on that whole
part. Only the outer training cases reach :func:`tune`, so the outer held-out fold and the
test part never take part in the choice.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from radiopath.errors import ConfigError

# (kwargs, training cases, their labels, scored cases) -> P(y = 1) of the scored cases
FitPredict = Callable[[Mapping, pd.DataFrame, np.ndarray, pd.DataFrame], np.ndarray]


def grid_points(grid: Mapping[str, Sequence]) -> list[dict]:
    """Every combination of the grid's values, as ``{dotted key: value}`` (one empty point for no grid)."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[key] for key in keys))]


def with_overrides(kwargs: Mapping, point: Mapping, label: str) -> dict:
    """A copy of ``kwargs`` with each dotted key of ``point`` set; the key's parent must exist."""
    result = copy.deepcopy(dict(kwargs))
    for key, value in point.items():
        *parents, leaf = key.split(".")
        target = result
        for part in parents:
            if not isinstance(target.get(part), dict):
                raise ConfigError(f"pipelines.{label}.grid.{key}", f"pipelines.{label}.kwargs has no {part!r} mapping")
            target = target[part]
        target[leaf] = value
    return result


def check_grid(label: str, kwargs: Mapping, grid: Mapping) -> None:
    """Fail at start on a grid that is not key -> non-empty list, or whose keys have no parent in ``kwargs``."""
    for key, values in grid.items():
        if not isinstance(values, Sequence) or isinstance(values, str) or not values:
            raise ConfigError(f"pipelines.{label}.grid.{key}", f"a non-empty list of values, got {values!r}")
    for point in grid_points(grid)[:1]:
        with_overrides(kwargs, point, label)


def tune(*, label: str, kwargs: Mapping, grid: Mapping, cases: pd.DataFrame, y: np.ndarray, inner_folds: int,
         seed: int, fit_predict: FitPredict) -> tuple[dict, pd.DataFrame]:
    """The kwargs of the grid point with the best mean inner-fold ROC AUC, and every point's scores.

    ``cases`` and ``y`` are one outer training part; the inner folds split it only.
    """
    folds = list(StratifiedKFold(n_splits=inner_folds, shuffle=True, random_state=seed).split(cases, y))
    rows = []
    for point in grid_points(grid):
        point_kwargs = with_overrides(kwargs, point, label)
        aucs = []
        for train, held in folds:
            p = fit_predict(point_kwargs, cases.iloc[train], y[train], cases.iloc[held])
            aucs.append(roc_auc_score(y[held], p) if 0 < y[held].sum() < len(held) else np.nan)
        rows.append({"params": json.dumps(point, sort_keys=True), "inner_auc_mean": float(np.nanmean(aucs)),
                     "inner_auc_std": float(np.nanstd(aucs, ddof=1)) if len(aucs) > 1 else np.nan})
    table = pd.DataFrame(rows)
    best = int(np.nanargmax(table["inner_auc_mean"].to_numpy()))
    table["chosen"] = np.arange(len(table)) == best
    return with_overrides(kwargs, grid_points(grid)[best], label), table
