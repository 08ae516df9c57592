"""The vectorised univariate Cox fits against lifelines' CoxPHFitter, one feature at a time.

The reference is lifelines itself (the selector used to call it per feature):
p-values, coefficients and standard errors agree to 1e-6 on datasets with tied
times, censoring, a strong, a null, a discrete, a badly scaled, a constant and
a nearly separating feature, with and without a penalizer; degenerate features
give lifelines' answer or NaN with a reason; the selector keeps the features
the per-feature lifelines selector kept.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.exceptions import ConvergenceWarning
from sksurv.util import Surv

from radiopath.survival.selection import UnivariateCoxSelector, univariate_cox_wald

FEATURES = ["strong", "null", "discrete", "scaled", "constant", "near_separating"]


def cohort(n, seed):
    """Rounded (tied) times with ~30 % censoring and the features of ``FEATURES``."""
    rng = np.random.default_rng(seed)
    strong = rng.normal(size=n)
    time = np.round(rng.exponential(20 * np.exp(-1.2 * strong))) + 1
    event = rng.random(n) < 0.7
    rank = np.argsort(np.argsort(time))
    X = np.column_stack(
        [
            strong,
            rng.normal(size=n),
            rng.integers(0, 3, n).astype(float),
            3e4 + 1e3 * rng.normal(size=n),  # standardised before fitting, as lifelines does
            np.full(n, 5.0),
            -rank + rng.normal(0, n / 10, n),  # orders the deaths almost perfectly
        ]
    )
    assert len(np.unique(time)) < n  # ties
    return X, time, event


def lifelines_fit(x, time, event, penalizer):
    """lifelines' (coef, se, p) for one feature and whether it converged; None where lifelines raises."""
    frame = pd.DataFrame({"x": x, "T": time, "E": event.astype(int)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            row = CoxPHFitter(penalizer=penalizer).fit(frame, "T", "E").summary.loc["x"]
        except Exception:  # noqa: BLE001 - lifelines raises several kinds for a degenerate feature
            return None, False
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return (row["coef"], row["se(coef)"], row["p"]), converged


@pytest.mark.parametrize("penalizer", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("n, seed", [(30, 0), (80, 1), (150, 2)])
def test_wald_statistics_equal_lifelines(n, seed, penalizer):
    X, time, event = cohort(n, seed)
    fit = univariate_cox_wald(X, time, event, penalizer)
    compared = 0
    for j, name in enumerate(FEATURES):
        reference, converged = lifelines_fit(X[:, j], time, event, penalizer)
        if name == "constant":
            assert reference is None  # lifelines cannot fit it either
            assert np.isnan(fit.p_value[j]) and "constant" in fit.errors[j]
            continue
        assert reference is not None and converged, f"{name}: the reference fit should converge"
        coef, se, p = reference
        assert fit.p_value[j] == pytest.approx(p, rel=1e-6, abs=1e-300), name
        assert fit.coef[j] == pytest.approx(coef, rel=1e-6), name
        assert fit.se[j] == pytest.approx(se, rel=1e-6), name
        assert j not in fit.errors and j not in fit.warnings
        compared += 1
    assert compared == len(FEATURES) - 1
    if penalizer == 0:
        assert fit.p_value[FEATURES.index("strong")] < 1e-2
        assert fit.p_value[FEATURES.index("near_separating")] < 1e-3


def test_penalty_is_lifelines_per_row_ridge_on_the_standardised_coefficient():
    X, time, event = cohort(80, 3)
    strong = X[:, [0]]
    free, penalised = (univariate_cox_wald(strong, time, event, penalizer) for penalizer in (0.0, 0.5))
    # the ridge pulls the coefficient towards 0 and adds n * penalizer to the information
    assert 0 < penalised.coef[0] < free.coef[0]
    assert penalised.se[0] < free.se[0]
    # rescaling the feature changes nothing: the penalty acts after standardisation
    rescaled = univariate_cox_wald(strong * 1000 + 7, time, event, 0.5)
    assert rescaled.p_value[0] == pytest.approx(penalised.p_value[0], rel=1e-9)
    assert rescaled.coef[0] * 1000 == pytest.approx(penalised.coef[0], rel=1e-9)


@pytest.mark.parametrize("penalizer", [0.0, 0.1])
def test_complete_separation_gives_lifelines_last_iterate_with_a_warning(penalizer):
    rng = np.random.default_rng(4)
    time = rng.exponential(10, 40) + 1  # no ties: x = -time orders every death first in its risk set
    event = rng.random(40) < 0.7
    x = -time
    fit = univariate_cox_wald(x[:, None], time, event, penalizer)
    (_, _, p), converged = lifelines_fit(x, time, event, penalizer)
    assert fit.p_value[0] == pytest.approx(p, rel=1e-6)
    # unpenalised, the likelihood has no maximum: lifelines gives up, and so do we, saying why
    assert converged == (penalizer > 0) == (0 not in fit.warnings)


@pytest.mark.parametrize("values", [[1.0, 1.0, 1.0], [0.3, -1.2, 2.0]])
def test_a_feature_without_information_is_nan_with_a_reason(values):
    rng = np.random.default_rng(5)
    time, event = np.round(rng.exponential(10, 50)) + 2, rng.random(50) < 0.7
    # it varies only among patients censored before the first death: no risk set sees it vary,
    # so the curvature is 0 up to rounding (lifelines returns p = 1 or NaN, or raises, by rounding)
    time[:3], event[:3] = 0.5, False
    x = np.zeros(50)
    x[:3] = values
    fit = univariate_cox_wald(np.column_stack([x, rng.normal(size=50)]), time, event)
    assert np.isnan(fit.p_value[0]) and "no information" in fit.errors[0]
    reference, _ = lifelines_fit(x, time, event, 0.0)
    assert reference is None or np.isnan(reference[2]) or reference[2] == pytest.approx(1.0)
    assert np.isfinite(fit.p_value[1])
    # with a penalty the maximum is b = 0, as lifelines finds
    penalised = univariate_cox_wald(x[:, None], time, event, 0.1)
    assert penalised.p_value[0] == pytest.approx(lifelines_fit(x, time, event, 0.1)[0][2], rel=1e-6)


def test_no_events_and_bad_penalizer_are_clear_errors():
    X = np.random.default_rng(6).normal(size=(20, 3))
    fit = univariate_cox_wald(X, np.arange(1.0, 21.0), np.zeros(20, dtype=bool))
    assert np.isnan(fit.p_value).all() and all("no events" in fit.errors[j] for j in range(3))
    with pytest.raises(ValueError, match="all samples are censored"):
        UnivariateCoxSelector().fit(X, Surv.from_arrays(np.zeros(20, dtype=bool), np.arange(1.0, 21.0)))
    with pytest.raises(ValueError, match="penalizer must be >= 0"):
        univariate_cox_wald(X, np.arange(1.0, 21.0), np.ones(20, dtype=bool), penalizer=-1.0)


def per_feature_lifelines_selection(X, y, p_threshold, penalizer):
    """The selector as it was: one lifelines fit per feature, NaN where it raises, best one kept if none pass."""
    p_values = np.full(X.shape[1], np.nan)
    for j in range(X.shape[1]):
        reference, _ = lifelines_fit(X[:, j], y["time"], y["event"], penalizer)
        if reference is not None:
            p_values[j] = reference[2]
    support = np.nan_to_num(p_values, nan=np.inf) < p_threshold
    if not support.any():
        support[np.nanargmin(p_values)] = True
    return support, p_values


@pytest.mark.parametrize("penalizer", [0.0, 0.2])
def test_selector_keeps_what_per_feature_lifelines_kept(penalizer):
    rng = np.random.default_rng(7)
    n = 45
    X = rng.normal(size=(n, 40))
    X[:, 5] = 2.0  # constant
    X[:, 6] = rng.integers(0, 2, n)
    time = np.round(rng.exponential(30 * np.exp(-0.8 * X[:, 0] - 0.5 * X[:, 1]))) + 1
    event = rng.random(n) < 0.65
    y = Surv.from_arrays(event, time)
    expected, p_values = per_feature_lifelines_selection(X, y, 0.2, penalizer)
    selector = UnivariateCoxSelector(p_threshold=0.2, penalizer=penalizer).fit(X, y)
    np.testing.assert_array_equal(selector.support_, expected)
    np.testing.assert_allclose(selector.p_values_, p_values, rtol=1e-6, equal_nan=True)
    assert selector.support_[0] and not selector.fallback_
    assert 5 in selector.errors_


def test_selector_fallback_matches_per_feature_lifelines():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(30, 6))
    y = Surv.from_arrays(rng.random(30) < 0.7, rng.exponential(10, 30) + 1)
    expected, _ = per_feature_lifelines_selection(X, y, 1e-12, 0.0)
    selector = UnivariateCoxSelector(p_threshold=1e-12).fit(X, y)
    assert selector.fallback_ and selector.support_.sum() == 1
    np.testing.assert_array_equal(selector.support_, expected)
