"""The four survival models as Pipelines with their hyperparameter grids.

Every model is ``[near-constant filter] -> [univariate Cox selection] ->
StandardScaler -> estimator``, so everything learnt from data is refitted on
each (inner or outer) training split and nothing reaches the test rows. The two
Cox models predict their survival functions from :class:`LogBreslow`, a
baseline hazard that stays valid when the fitted risk scores span many orders
of magnitude.
"""

from __future__ import annotations

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sksurv.ensemble import RandomSurvivalForest
from sksurv.functions import StepFunction
from sksurv.linear_model import CoxnetSurvivalAnalysis, CoxPHSurvivalAnalysis
from sksurv.svm import FastSurvivalSVM
from sksurv.util import check_array_survival

from radiopath.survival.selection import NearConstantFilter, UnivariateCoxSelector


class LogBreslow:
    r"""Breslow's baseline hazard of a fitted Cox model, with every risk-set sum taken in log space.

    scikit-survival's ``BreslowEstimator`` gets each risk-set sum by subtracting
    the patients who left from the running total. When the training risk scores
    span more than ~16 orders of magnitude (a nearly separable fit, as CoxPH's
    on a few dozen patient vectors with a small ridge penalty) the early, huge
    scores swamp the total, the later sums become rounding noise, zero or
    negative, and the predicted survival leaves [0, 1] (integrated Brier scores
    far above 1, or infinite curves). Here the sums accumulate
    from the last time backwards with ``logaddexp``, without subtraction, and a
    patient's cumulative hazard :math:`\sum_k d_k e^{\eta - \log R_k}` adds
    non-negative terms only, so its survival :math:`e^{-H}` lies in [0, 1] and
    never increases. Otherwise it is the same estimate: same times, same
    hazard steps up to rounding.
    """

    def __init__(self, linear_predictor: np.ndarray, event: np.ndarray, time: np.ndarray):
        order = np.argsort(time, kind="mergesort")
        eta, time, event = np.asarray(linear_predictor, dtype=float)[order], time[order], event[order]
        self.unique_times_, first = np.unique(time, return_index=True)
        deaths = np.bincount(np.searchsorted(self.unique_times_, time[event]), minlength=len(self.unique_times_))
        # log of the sum of exp(eta) over everyone still at risk at each time
        log_at_risk = np.logaddexp.accumulate(eta[::-1])[::-1][first]
        with np.errstate(divide="ignore"):
            self.log_hazard_steps_ = np.log(deaths) - log_at_risk  # -inf where only censoring happens

    def cumulative_hazard(self, linear_predictor: np.ndarray) -> np.ndarray:
        """Each patient's (row) cumulative hazard at each of ``unique_times_`` (column)."""
        with np.errstate(over="ignore"):
            # an overflowing step is an infinite hazard, survival 0: the right limit
            steps = np.exp(np.asarray(linear_predictor, dtype=float)[:, None] + self.log_hazard_steps_[None, :])
        return np.cumsum(steps, axis=1)


class _LogBreslowPredictions:
    """Survival and cumulative hazard functions of a Cox estimator from a :class:`LogBreslow` baseline.

    Mixed in before the scikit-survival class: its ``fit`` fits the model, then
    the baseline on the model's own training risk scores.
    """

    def fit(self, X, y):
        """Fit the Cox model, then its :class:`LogBreslow` baseline hazard (``breslow_``)."""
        super().fit(X, y)
        event, time = check_array_survival(X, y)
        self.breslow_ = LogBreslow(self.predict(X), event, time)
        return self

    def predict_cumulative_hazard_function(self, X, return_array: bool = False):
        """Cumulative hazard functions, or with ``return_array`` their values at ``breslow_.unique_times_``."""
        return self._step_functions(self.breslow_.cumulative_hazard(self.predict(X)), return_array)

    def predict_survival_function(self, X, return_array: bool = False):
        """Survival functions, or with ``return_array`` their values at ``breslow_.unique_times_``."""
        return self._step_functions(np.exp(-self.breslow_.cumulative_hazard(self.predict(X))), return_array)

    def _step_functions(self, values: np.ndarray, return_array: bool):
        if return_array:
            return values
        return np.array([StepFunction(self.breslow_.unique_times_, row) for row in values], dtype=object)


class LogBreslowCoxPH(_LogBreslowPredictions, CoxPHSurvivalAnalysis):
    """scikit-survival's CoxPH with survival functions from a :class:`LogBreslow` baseline."""


class LogBreslowCoxnet(_LogBreslowPredictions, CoxnetSurvivalAnalysis):
    """scikit-survival's Coxnet with survival functions from a :class:`LogBreslow` baseline.

    The baseline belongs to the last penalty of ``alphas_``, the one ``predict``
    uses by default: the benchmark fits one penalty at a time.
    """


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
        return LogBreslowCoxPH(ties=params["ties"], n_iter=params["n_iter"])
    if name == "Coxnet":
        return LogBreslowCoxnet(
            l1_ratio=params["l1_ratio"],
            alpha_min_ratio=params["alpha_min_ratio"],
            n_alphas=params["n_alphas"],
            max_iter=params["max_iter"],
            fit_baseline_model=False,  # LogBreslow gives its survival functions
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
