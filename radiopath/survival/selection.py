"""Feature filters fitted on training rows only, so they can sit inside a Pipeline.

Both are scikit-learn transformers: in a :class:`~sklearn.pipeline.Pipeline`
under :class:`~sklearn.model_selection.GridSearchCV` they are refitted on every
inner training split, so neither the outer test fold nor an inner validation
split ever influences which features a model sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import chi2
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted
from sksurv.util import check_array_survival


class _ColumnSubset(TransformerMixin, BaseEstimator):
    """Keeps the columns in ``support_``; remembers input names for ``get_feature_names_out``."""

    def _start_fit(self, X) -> np.ndarray:
        names = getattr(X, "columns", None)
        X = check_array(X, dtype=float)
        self.n_features_in_ = X.shape[1]
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        return X

    def transform(self, X):
        check_is_fitted(self, "support_")
        X = check_array(X, dtype=float)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected {self.n_features_in_} features, got {X.shape[1]}")
        return X[:, self.support_]

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "support_")
        if input_features is None:
            input_features = getattr(self, "feature_names_in_", None)
        if input_features is None:
            input_features = np.array([f"x{i}" for i in range(self.n_features_in_)], dtype=object)
        return np.asarray(input_features, dtype=object)[self.support_]


class NearConstantFilter(_ColumnSubset):
    """Drop features whose most frequent value covers more than ``max_mode_fraction`` of rows.

    A constant column (or a one-hot column with a handful of ones) makes Cox
    fits singular or unstable; continuous features never repeat and are kept.
    """

    def __init__(self, max_mode_fraction: float = 0.98):
        self.max_mode_fraction = max_mode_fraction

    def fit(self, X, y=None):
        X = self._start_fit(X)
        mode_fraction = np.array(
            [np.unique(column, return_counts=True)[1].max() / len(column) for column in X.T]
        )
        self.mode_fraction_ = mode_fraction
        self.support_ = (mode_fraction <= self.max_mode_fraction) & (X.std(axis=0) > 0)
        return self


class UnivariateCoxSelector(_ColumnSubset):
    """Keep features whose univariate Cox regression has a Wald p-value below ``p_threshold``.

    ``y`` is a scikit-survival structured array (event, time). The p-values are
    those of lifelines' ``CoxPHFitter(penalizer=penalizer)`` fitted on each
    feature alone, computed for all features at once by
    :func:`univariate_cox_wald`. A feature whose fit fails (constant, no
    information) gets p = NaN and is dropped; the reason is kept in
    ``errors_``. A fit that stopped without converging keeps its p-value, as
    lifelines' does, and the reason is kept in ``convergence_warnings_``. When
    no feature passes, the one with the smallest p-value is kept so the
    downstream model can still be fitted (``fallback_`` says so).
    """

    def __init__(self, p_threshold: float = 0.2, penalizer: float = 0.0):
        self.p_threshold = p_threshold
        self.penalizer = penalizer

    def fit(self, X, y):
        X = self._start_fit(X)
        event, time = check_array_survival(X, y)
        fit = univariate_cox_wald(X, time, event, self.penalizer)
        self.p_values_ = fit.p_value
        self.errors_ = fit.errors
        self.convergence_warnings_ = fit.warnings
        support = np.nan_to_num(fit.p_value, nan=np.inf) < self.p_threshold
        self.fallback_ = not support.any() and np.isfinite(fit.p_value).any()
        if self.fallback_:
            support[np.nanargmin(fit.p_value)] = True
        if not support.any():
            raise ValueError(f"univariate Cox selection: none of the {X.shape[1]} features could be fitted")
        self.support_ = support
        return self


@dataclass
class UnivariateCoxFit:
    """Per-feature results of :func:`univariate_cox_wald`.

    ``coef`` and ``se`` are on the feature's own scale, ``z`` and ``p_value``
    are the Wald statistic and its chi-square(1) p-value, ``n_iter`` the
    Newton-Raphson iterations. ``errors`` maps a feature index to why it has no
    fit (its values are NaN); ``warnings`` maps one to why its fit stopped
    without converging (its values are those of the last iterate, as lifelines
    returns them).
    """

    coef: np.ndarray
    se: np.ndarray
    z: np.ndarray
    p_value: np.ndarray
    n_iter: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)
    warnings: dict[int, str] = field(default_factory=dict)


class _EfronRiskSets:
    """Where the Efron terms of a survival sample come from, fixed for every feature and coefficient.

    Rows are sorted by time. Each death ``e`` belongs to the ``group[e]``-th
    distinct event time, whose risk set starts at sorted row
    ``risk_start[group[e]]`` and whose tied deaths are
    ``deaths[tie_start[k]:tie_start[k + 1]]``; ``fraction[e]`` is Efron's l/m
    for the l-th of its m tied deaths.
    """

    def __init__(self, time: np.ndarray, event: np.ndarray):
        self.order = np.argsort(time, kind="stable")
        sorted_time, sorted_event = time[self.order], event[self.order]
        self.deaths = np.flatnonzero(sorted_event)
        event_times, self.tie_start, ties = np.unique(sorted_time[self.deaths], return_index=True, return_counts=True)
        self.group = np.repeat(np.arange(len(event_times)), ties)
        rank_in_tie = np.arange(len(self.deaths)) - self.tie_start[self.group]
        self.fraction = rank_in_tie / ties[self.group]
        # the risk set of an event time: every row whose time is not earlier
        self.risk_start = np.searchsorted(sorted_time, event_times, side="left")

    def derivatives(self, z_sorted: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Log partial likelihood and its first two derivatives in ``beta``, one per column of ``z_sorted``."""
        eta = z_sorted * beta
        # shifting the linear predictor by a constant leaves the likelihood unchanged and keeps exp finite
        shift = eta.max(axis=0)
        w = np.exp(eta - shift)
        wz = w * z_sorted
        moments = []
        for values in (w, wz, wz * z_sorted):
            at_risk = np.cumsum(values[::-1], axis=0)[::-1][self.risk_start][self.group]
            tied = np.add.reduceat(values[self.deaths], self.tie_start, axis=0)[self.group]
            moments.append(at_risk - self.fraction[:, None] * tied)
        s0, s1, s2 = moments
        mean = s1 / s0
        z_deaths = z_sorted[self.deaths]
        log_lik = (beta * z_deaths - np.log(s0) - shift).sum(axis=0)
        gradient = (z_deaths - mean).sum(axis=0)
        hessian = -(s2 / s0 - mean**2).sum(axis=0)
        return log_lik, gradient, hessian


def univariate_cox_wald(X: np.ndarray, time: np.ndarray, event: np.ndarray, penalizer: float = 0.0) -> UnivariateCoxFit:
    r"""One-covariate Cox regressions of every column of ``X``, all at once, with Wald tests.

    As lifelines' ``CoxPHFitter`` does, each feature is first standardised,
    :math:`z_i = (x_i - \bar x) / s_x` (sample std), and the penalised Efron
    log partial likelihood of its coefficient :math:`b` is maximised:

    .. math::

        \ell(b) = \sum_k \Big[ b \sum_{i \in D_k} z_i
                   - \sum_{l=0}^{m_k - 1} \log\Big( \sum_{i \in R_k} e^{b z_i}
                   - \tfrac{l}{m_k} \sum_{i \in D_k} e^{b z_i} \Big) \Big]
                   - \tfrac{n \lambda}{2} b^2

    over the distinct event times :math:`t_k` with deaths :math:`D_k`
    (:math:`m_k` of them) and risk set :math:`R_k = \{i: t_i \ge t_k\}`;
    :math:`n` is the number of rows and :math:`\lambda` the ``penalizer``
    (lifelines' per-row penalty :math:`\lambda(\tfrac{1-\rho}{2} b^2 + \rho |b|)`
    with its default ``l1_ratio`` :math:`\rho = 0`). Without ties the
    :math:`l/m_k` terms vanish and this is Breslow's likelihood.

    Damped Newton-Raphson from :math:`b = 0`, :math:`b \leftarrow b + s\,\ell'(b) / (-\ell''(b))`,
    see :func:`_newton_raphson`. The Wald statistic uses the observed
    information at the last iterate, :math:`z = b \sqrt{-\ell''(b)}`, the same
    on the feature's own scale (coefficient :math:`b / s_x`, standard error
    :math:`1 / (s_x \sqrt{-\ell''(b)})`); :math:`p = P(\chi^2_1 > z^2)`.

    Errors (NaN, reason in ``errors``): no events, a constant feature, an
    unpenalised one without information (constant within every risk set) and
    one whose Newton step cannot be taken. A fit stopped without converging
    (separation) keeps its last iterate, as lifelines returns it, with the
    reason in ``warnings``.
    """
    if not penalizer >= 0:
        raise ValueError(f"univariate Cox: penalizer must be >= 0, got {penalizer!r}")
    X = np.asarray(X, dtype=float)
    n, d = X.shape
    event = np.asarray(event, dtype=bool)
    result = UnivariateCoxFit(*(np.full(d, np.nan) for _ in range(4)), n_iter=np.zeros(d, dtype=int))
    if not event.any():
        result.errors = {j: "no events: the Cox partial likelihood is empty" for j in range(d)}
        return result
    scale = X.std(axis=0, ddof=1) if n > 1 else np.zeros(d)
    constant = ~(scale > 0)
    result.errors = {int(j): "constant feature: nothing to regress on" for j in np.flatnonzero(constant)}
    features = np.flatnonzero(~constant)
    risk_sets = _EfronRiskSets(np.asarray(time, dtype=float), event)
    z_sorted = ((X[:, features] - X[:, features].mean(axis=0)) / scale[features])[risk_sets.order]
    if penalizer == 0:
        flat = _without_information(risk_sets, z_sorted)
        result.errors.update(dict.fromkeys(features[flat].tolist(), _NO_INFORMATION))
        features, z_sorted = features[~flat], z_sorted[:, ~flat]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # a fit running off to infinity (separation) may overflow on its way; _stops catches it
        beta, information, n_iter, errors, warnings_ = _newton_raphson(risk_sets, z_sorted, n * penalizer)
    result.errors.update({int(features[j]): reason for j, reason in errors.items()})
    result.warnings = {int(features[j]): reason for j, reason in warnings_.items()}
    result.n_iter[features] = n_iter
    fitted = np.ones(len(features), dtype=bool)
    fitted[list(errors)] = False
    done = features[fitted]
    root_information = np.sqrt(information[fitted])
    result.z[done] = beta[fitted] * root_information
    result.coef[done] = beta[fitted] / scale[done]
    result.se[done] = 1.0 / (scale[done] * root_information)
    result.p_value[done] = chi2.sf(result.z[done] ** 2, 1)
    return result


_NO_INFORMATION = "no information (curvature <= 0): the feature does not vary within the risk sets"


def _without_information(risk_sets: _EfronRiskSets, z_sorted: np.ndarray) -> np.ndarray:
    """Columns whose information at b = 0 is nil: constant within every risk set of a death.

    Their curvature is 0 up to rounding, so lifelines' answer for them (p = 1,
    NaN or an error) is rounding noise; unpenalised, they get an error instead.
    """
    _, _, hessian = risk_sets.derivatives(z_sorted, np.zeros(z_sorted.shape[1]))
    # standardised features carry information of order 1 per death
    return -hessian <= 1e-10 * len(risk_sets.deaths)


# lifelines' CoxPHFitter fit options, and the step-size schedule of _next_step_sizes is its too:
# lifelines stops well before full convergence (a relative change of the log-likelihood below
# 1e-9 is enough), so only the same iterates give its p-values (a fully converged fit differs by
# up to ~1e-3 relative for weak features, enough to move a feature across p_threshold)
_STEP_SIZE, _PRECISION, _R_PRECISION, _MAX_STEPS = 0.95, 1e-7, 1e-9, 500


def _newton_raphson(risk_sets: _EfronRiskSets, z_sorted: np.ndarray, ridge: float):
    r"""Damped Newton-Raphson on every column at once, each with its own step size and stopping point.

    ``ridge`` is :math:`n\lambda`. Iteration :math:`i` moves :math:`b` by
    :math:`s_i \delta_{i-1}`, evaluates :math:`\ell, \ell', \ell''` there and
    the Newton step :math:`\delta_i = \ell' / (-\ell'')`; :func:`_stops` says
    which columns stop and :func:`_next_step_sizes` gives :math:`s_{i+1}` to
    the others. Only active columns are evaluated, so the few slow ones cost
    little.

    Returns per column the last iterate, the information there, the
    iterations, and the errors and warnings by column index.
    """
    d = z_sorted.shape[1]
    beta, delta, information = np.zeros(d), np.zeros(d), np.full(d, np.nan)
    step, previous_log_lik = np.full(d, _STEP_SIZE), np.zeros(d)
    recent_norms = np.full((d, 3), np.nan)  # the last three |delta|, newest last
    damped = np.zeros(d, dtype=bool)  # a large step was damped once: grow back towards the initial size
    n_iter = np.zeros(d, dtype=int)
    errors, warnings_ = {}, {}
    active = np.arange(d)
    for i in range(1, _MAX_STEPS + 1):
        if not len(active):
            break
        beta[active] += step[active] * delta[active]
        n_iter[active] = i
        log_lik, gradient, hessian = risk_sets.derivatives(z_sorted[:, active], beta[active])
        log_lik = log_lik - 0.5 * ridge * beta[active] ** 2
        gradient, hessian = gradient - ridge * beta[active], hessian - ridge
        information[active], delta[active] = -hessian, gradient / -hessian
        stopped, reasons = _stops(i, log_lik, previous_log_lik[active], gradient, hessian, delta[active], step[active])
        for target, masks in zip((errors, warnings_), reasons):
            for reason, mask in masks.items():
                target.update(dict.fromkeys(active[mask].tolist(), reason))
        previous_log_lik[active] = log_lik
        norm = np.abs(delta[active])[~stopped]
        active = active[~stopped]
        step[active], damped[active], recent_norms[active] = _next_step_sizes(
            step[active], damped[active], recent_norms[active], norm
        )
    return beta, information, n_iter, errors, warnings_


def _stops(i, log_lik, previous_log_lik, gradient, hessian, delta, step) -> tuple[np.ndarray, tuple[dict, dict]]:
    r"""Lifelines' stopping rules at iteration ``i``, in its order, for the columns evaluated.

    A column is an error when its information is not positive or its step is
    NaN (lifelines' Cholesky solve fails). It has converged when
    :math:`|\delta| < 10^{-7}`, the relative change of :math:`\ell` is below
    :math:`10^{-9}` or the Newton decrement :math:`\ell' \delta / 2 < 10^{-7}`
    (with a warning if :math:`|\delta| > 0.1` still); else it stops with a
    warning after 500 iterations, once the step size is :math:`\le 10^{-5}`,
    or when :math:`|\ell| < 10^{-4}` with :math:`|\delta| > 1`.

    Returns the mask of stopping columns and ({error: mask}, {warning: mask}).
    """
    norm = np.abs(delta)
    singular = ~(-hessian > 0) | np.isnan(delta)
    overflow = singular & np.isnan(hessian)
    small_change = (previous_log_lik != 0) & (np.abs(log_lik - previous_log_lik) / -previous_log_lik < _R_PRECISION)
    converged = ~singular & ((norm < _PRECISION) | small_change | (gradient * delta / 2 < _PRECISION))
    stopped = singular | converged
    errors = {
        "non-finite log-likelihood curvature (overflow: separation?)": overflow,
        _NO_INFORMATION: singular & ~overflow,
    }
    # lifelines warns here too: a large step at the stop means a flat or unbounded likelihood
    warnings_ = {"converged with a Newton step > 0.1: no unique finite maximum (separation?)": converged & (norm > 0.1)}
    for reason, mask in (
        (f"no convergence in {_MAX_STEPS} Newton-Raphson steps", np.full(len(norm), i >= _MAX_STEPS)),
        ("Newton-Raphson step size shrank below 1e-5", step <= 1e-5),
        ("log-likelihood near 0 with a large step: complete separation", (np.abs(log_lik) < 1e-4) & (norm > 1.0)),
    ):
        warnings_[reason] = mask & ~stopped
        stopped = stopped | mask
    return stopped, (errors, warnings_)


def _next_step_sizes(step: np.ndarray, damped: np.ndarray, recent_norms: np.ndarray, norm: np.ndarray):
    """Lifelines' step-size schedule, one column per row: the step size of the next iteration.

    A step that has been damped grows back by 1.3x (up to the initial 0.95);
    a Newton step of norm >= 15 cuts it to a tenth, one in (5, 15) to a
    quarter; if the last three norms fell strictly it grows by 1.3x (up to 1),
    otherwise it shrinks by 2 %.
    """
    recent_norms = np.concatenate([recent_norms[:, 1:], norm[:, None]], axis=1)
    step = np.where(damped, np.minimum(step * 1.3, _STEP_SIZE), step)
    step = np.where(norm >= 15.0, step * 0.1, np.where(norm > 5.0, step * 0.25, step))
    damped = damped | (norm > 5.0)
    have_three = ~np.isnan(recent_norms[:, 0])
    falling = (np.diff(recent_norms, axis=1) < 0).all(axis=1)
    step = np.where(have_three & falling, np.minimum(step * 1.3, 1.0), np.where(have_three, step * 0.98, step))
    return step, damped, recent_norms
