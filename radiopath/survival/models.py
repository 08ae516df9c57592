"""The four survival models as Pipelines with their hyperparameter grids.

Every model is ``[near-constant filter] -> [univariate Cox selection] ->
StandardScaler -> estimator``, so everything learnt from data is refitted on
each (inner or outer) training split and nothing reaches the test rows.
"""

from __future__ import annotations

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sksurv.ensemble import RandomSurvivalForest
from sksurv.linear_model import CoxnetSurvivalAnalysis, CoxPHSurvivalAnalysis
from sksurv.svm import FastSurvivalSVM

from radiopath.survival.selection import NearConstantFilter, UnivariateCoxSelector


def make_pipeline(estimator, selection: dict, memory=None) -> Pipeline:
    """Feature filters (configured by ``selection``), scaling and ``estimator`` in one Pipeline."""
    steps = [("near_constant", NearConstantFilter(selection["max_mode_fraction"]))]
    if selection["univariate_cox"]:
        steps.append(("univariate_cox", UnivariateCoxSelector(selection["p_threshold"], selection["penalizer"])))
    steps += [("scale", StandardScaler()), ("model", estimator)]
    # memory caches the fitted filters by (step settings, rows): the grid search fits them once per
    # split, not per candidate, and the four models of a fold share those fits
    return Pipeline(steps, memory=memory)


def make_estimator(name: str, params: dict, seed: int):
    """The scikit-survival estimator of model ``name`` with its fixed (untuned) settings."""
    if name == "RSF":
        return RandomSurvivalForest(
            n_estimators=params["n_estimators"],
            min_samples_leaf=params["min_samples_leaf"],
            max_features=params["max_features"],
            random_state=seed,
            n_jobs=params["n_jobs"],
        )
    if name == "CoxPH":
        return CoxPHSurvivalAnalysis(ties=params["ties"], n_iter=params["n_iter"])
    if name == "Coxnet":
        return CoxnetSurvivalAnalysis(
            l1_ratio=params["l1_ratio"],
            alpha_min_ratio=params["alpha_min_ratio"],
            n_alphas=params["n_alphas"],
            max_iter=params["max_iter"],
            fit_baseline_model=True,  # survival functions for the integrated Brier score
        )
    if name == "FSVM":
        return FastSurvivalSVM(
            rank_ratio=1.0,
            max_iter=params["max_iter"],
            tol=params["tol"],
            optimizer=params["optimizer"],
            random_state=seed,
        )
    raise ValueError(f"unknown survival model {name!r} (RSF, CoxPH, Coxnet, FSVM)")


def param_grid(name: str, params: dict, pipeline: Pipeline, X_train, y_train) -> dict:
    """The grid searched by inner CV, as ``model__*`` parameters of ``pipeline``.

    Coxnet's penalties are taken along its own regularisation path, computed on
    the training part (``grid_size`` of them, evenly spaced on the path).
    """
    if name == "RSF":
        return {"model__max_depth": list(params["max_depth"])}
    if name in ("CoxPH", "FSVM"):
        return {"model__alpha": [float(a) for a in params["alpha"]]}
    if name == "Coxnet":
        path = pipeline.fit(X_train, y_train).named_steps["model"].alphas_
        picks = np.unique(np.linspace(0, len(path) - 1, params["grid_size"]).round().astype(int))
        return {"model__alphas": [[float(path[i])] for i in picks]}
    raise ValueError(f"unknown survival model {name!r}")
