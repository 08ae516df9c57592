"""Test-fold metrics (scikit-survival) and the matching tuning scorers.

τ for Uno's C-IPCW and the time grid of the cumulative/dynamic AUC and the
integrated Brier score are fixed per outer fold from its data, and the same τ
is used to score the inner cross-validation when tuning on C-IPCW.

Every metric here lies in [0, 1]; :func:`refuse_impossible` turns a value
outside it, which only a broken fit or estimate can give, into N/A with the
reason, so that it is never averaged into a summary.
"""

from __future__ import annotations

import numpy as np
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)

METRICS = ("c_index", "c_ipcw", "cd_auc", "ibs")
RANGE = (0.0, 1.0)  # of every metric in METRICS


def tau_for(y_train: np.ndarray, quantile: float) -> float:
    """τ: a quantile of the training part's times."""
    return float(np.quantile(y_train["time"], quantile))


def time_grid(y_train: np.ndarray, y_test: np.ndarray, quantiles, size: int) -> np.ndarray:
    """``size`` times between two quantiles of the test times, where both metrics are defined.

    Survival functions end at the last training time and the censoring
    distribution is estimated from the training part, so the grid stays inside
    the training follow-up; the dynamic AUC at t needs a test event at or before
    t and a test patient still at risk after t, so it starts no earlier than the
    first test event and ends before the last test time.
    """
    test_time, test_event = y_test["time"], y_test["event"]
    if not test_event.any():
        raise ValueError("no events in the test fold")
    low, high = np.quantile(test_time, quantiles)
    low = max(low, test_time[test_event].min(), y_train["time"].min())
    high = min(high, np.nextafter(y_train["time"].max(), -np.inf), np.nextafter(test_time.max(), -np.inf))
    if not low < high:
        raise ValueError(
            f"no valid time grid: the test quantiles, test events and training follow-up leave [{low}, {high}]"
        )
    return np.linspace(low, high, size)


def within_follow_up(y_train: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    """Test follow-up censored at the last training time, where the censoring estimate ends.

    scikit-survival cannot weight a test event after the last training time.
    For grid times before that point the dynamic AUC and the Brier score are
    unchanged: such a patient is a control, or still alive, either way.
    """
    horizon = y_train["time"].max()
    beyond = y_test["time"] > horizon
    truncated = y_test.copy()
    truncated["time"][beyond] = horizon
    truncated["event"][beyond] = False
    return truncated


def harrell_c(y_test: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's concordance index."""
    return float(concordance_index_censored(y_test["event"], y_test["time"], risk)[0])


def uno_c(y_train: np.ndarray, y_test: np.ndarray, risk: np.ndarray, tau: float) -> float:
    """Uno's IPCW concordance index truncated at ``tau`` (censoring from the training part)."""
    return float(concordance_index_ipcw(y_train, y_test, risk, tau=tau)[0])


def mean_cd_auc(y_train: np.ndarray, y_test: np.ndarray, risk: np.ndarray, times: np.ndarray) -> float:
    """Cumulative/dynamic AUC averaged over ``times`` (weighted by the KM drop, as scikit-survival does)."""
    return float(cumulative_dynamic_auc(y_train, within_follow_up(y_train, y_test), risk, times)[1])


def ibs(y_train: np.ndarray, y_test: np.ndarray, survival_functions, times: np.ndarray) -> float:
    """Integrated Brier score of predicted survival functions over ``times``.

    Raises ValueError when a predicted survival probability is not in [0, 1]:
    the score of such curves would be meaningless, possibly far above 1.
    """
    probabilities = np.vstack([fn(times) for fn in survival_functions])
    outside = ~((probabilities >= 0) & (probabilities <= 1))  # NaN counts as outside
    if outside.any():
        patients = int(outside.any(axis=1).sum())
        numbers = probabilities[~np.isnan(probabilities)]
        span = f"from {numbers.min():.6g} to {numbers.max():.6g}" if numbers.size else "all NaN"
        raise ValueError(
            f"predicted survival outside [0, 1] for {patients} of {len(probabilities)} test patients ({span}): "
            "no Brier score"
        )
    return float(integrated_brier_score(y_train, within_follow_up(y_train, y_test), probabilities, times))


def refuse_impossible(name: str, value: float) -> tuple[float, str]:
    """``(value, "")`` for a score in :data:`RANGE`; ``(NaN, reason)`` for NaN or a value outside it."""
    if np.isnan(value):
        return np.nan, "undefined on this fold (scikit-survival gave NaN)"
    low, high = RANGE
    if not low <= value <= high:
        return np.nan, f"refused: {name} = {value:.6g} is outside [{low:g}, {high:g}]"
    return value, ""


def tuning_scorer(name: str, y_reference: np.ndarray, tau: float):
    """A GridSearchCV scorer: ``cindex`` (Harrell) or ``cipcw`` (Uno at ``tau``).

    For ``cipcw`` the censoring distribution comes from ``y_reference``, the
    outer training part, which contains every inner validation split.
    """
    if name == "cindex":
        return lambda estimator, X, y: harrell_c(y, estimator.predict(X))
    if name == "cipcw":
        return lambda estimator, X, y: uno_c(y_reference, y, estimator.predict(X), tau)
    raise ValueError(f"tuning score must be cindex or cipcw, got {name!r}")
