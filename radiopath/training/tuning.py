"""Hyperparameter search inside one outer fold's training patients (``tune`` in ``conf/train.yaml``).

The training patients of an outer fold are split into ``tune.inner_folds``
patient-level folds stratified on the event (:func:`~radiopath.folds.make_folds`).
Every point of ``tune.grid`` is trained on each inner-training part and scored on
the inner-validation part; the point with the best mean score wins (ties: the first
in grid order) and the outer fold is then trained on its whole training part with it.
The outer test patients are never handed to :func:`search`, so nothing it chooses
has seen them.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from radiopath.errors import ConfigError
from radiopath.models import AGGREGATORS, check_model_config
from radiopath.training.cohort import Patient
from radiopath.folds import make_folds
from radiopath.training.scaling import NodeScaler
from radiopath.training.trainer import TrainSettings

log = logging.getLogger(__name__)

TUNABLE = ("training.", "model.kwargs.", "node_features.")
SCORES = ("cindex",)
_ABSENT = object()

# score(values, inner_train, inner_validation) -> the validation score of a model trained with values
Score = Callable[[dict, list[Patient], list[Patient]], float]


@dataclass
class Tuning:
    """The grid's scores (one row per point, ``chosen`` flags the winner) and the chosen values."""

    table: pd.DataFrame
    chosen: dict


def tuning_grid(cfg: DictConfig) -> dict[str, list]:
    """``tune.grid`` as ``{dotted key: values}``, checked against ``cfg``; a bad entry is a ConfigError naming it.

    The grid may be written flat (``training.lr: [...]``) or nested
    (``training: {lr: [...]}``, what ``+tune.grid.training.lr=[...]`` makes). Every point is
    checked as the run would use it, so a bad value fails here, before any fold trains.
    """
    tune = cfg.tune
    if not AGGREGATORS.get(cfg.model.name).trainable:
        raise ConfigError("tune.enabled", f"true, but model {cfg.model.name} has nothing to train")
    if tune.score not in SCORES:
        raise ConfigError("tune.score", f"one of {', '.join(SCORES)}, got {tune.score!r}")
    if int(tune.inner_folds) < 2:
        raise ConfigError("tune.inner_folds", f"needs at least 2 inner folds, got {tune.inner_folds}")
    if tune.grid is not None and not OmegaConf.is_dict(tune.grid):
        raise ConfigError("tune.grid", f"give a mapping of config keys to lists of values, not {tune.grid}")
    grid = _flatten(OmegaConf.to_container(tune.grid, resolve=True)) if tune.grid else {}
    if not grid:
        raise ConfigError("tune.grid", "empty while tune.enabled=true, e.g. tune.grid='{training.lr:[3e-4,1e-3]}'")
    for key, values in grid.items():
        if not key.startswith(TUNABLE) or OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            raise ConfigError("tune.grid", f"key {key!r} is not a setting under training, model.kwargs or "
                                           f"node_features (model {cfg.model.name})")
        if not isinstance(values, list) or not values:
            raise ConfigError("tune.grid", f"key {key!r}: give a non-empty list of values, not {values!r}")
    for values in grid_points(grid):
        _check_point(cfg, values)
    return grid


def _check_point(cfg: DictConfig, values: dict) -> None:
    point = with_values(cfg, values)
    try:
        check_model_config(point.model.name, OmegaConf.to_container(point.model.kwargs, resolve=True),
                           modalities=list(point.modalities))
        TrainSettings.from_config(OmegaConf.to_container(point.training, resolve=True))
        NodeScaler(**OmegaConf.to_container(point.node_features, resolve=True))
    except ConfigError as error:
        raise ConfigError(error.key, f"{error.problem} (tune.grid point {values})") from None


def _flatten(node: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def grid_points(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values, the last key varying fastest."""
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def with_values(cfg: DictConfig, values: dict) -> DictConfig:
    """A copy of ``cfg`` with the dotted keys of ``values`` set (``cfg`` itself when there are none)."""
    if not values:
        return cfg
    changed = copy.deepcopy(cfg)
    for key, value in values.items():
        OmegaConf.update(changed, key, value, merge=False)
    return changed


def search(grid: dict[str, list], patients: list[Patient], score: Score, *, inner_folds: int,
           seed: int) -> Tuning:
    """Score every grid point by inner cross-validation on ``patients`` and choose the best mean.

    An inner fold whose score is undefined (NaN: no events among its validation
    patients) is left out of the mean; when no point has a defined mean, the first
    point is chosen with a warning.
    """
    inner = make_folds([p.case_id for p in patients], np.array([p.event for p in patients]),
                       n_folds=inner_folds, seed=seed)["fold"].to_numpy()
    parts = [([p for p, f in zip(patients, inner) if f != j], [p for p, f in zip(patients, inner) if f == j])
             for j in range(inner_folds)]
    points = grid_points(grid)
    rows = []
    for number, values in enumerate(points):
        scores = [score(values, train, validation) for train, validation in parts]
        defined = [s for s in scores if not math.isnan(s)]
        rows.append({"point": number, **values, **{f"inner{j}": s for j, s in enumerate(scores)},
                     "mean": float(np.mean(defined)) if defined else math.nan})
    table = pd.DataFrame(rows)
    means = table["mean"].to_numpy()
    if np.isnan(means).all():
        log.warning("no grid point has a defined inner score (validation folds without events?): "
                    "choosing the first point")
        best = 0
    else:
        best = int(np.nanargmax(means))  # the first of equal maxima: ties go to grid order
    table["chosen"] = table["point"] == best
    return Tuning(table, points[best])
