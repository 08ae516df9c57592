"""Feature filters fitted on training rows only, so they can sit inside a Pipeline.

Both are scikit-learn transformers: in a :class:`~sklearn.pipeline.Pipeline`
under :class:`~sklearn.model_selection.GridSearchCV` they are refitted on every
inner training split, so neither the outer test fold nor an inner validation
split ever influences which features a model sees.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
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
    """Keep features whose univariate Cox regression (lifelines) has a Wald p-value below ``p_threshold``.

    ``y`` is a scikit-survival structured array (event, time). A feature whose
    fit fails gets p = NaN and is dropped; the reason is kept in ``errors_``.
    When no feature passes, the one with the smallest p-value is kept so the
    downstream model can still be fitted (``fallback_`` says so).
    """

    def __init__(self, p_threshold: float = 0.2, penalizer: float = 0.0):
        self.p_threshold = p_threshold
        self.penalizer = penalizer

    def fit(self, X, y):
        X = self._start_fit(X)
        event, time = check_array_survival(X, y)
        p_values = np.full(X.shape[1], np.nan)
        self.errors_ = {}
        for j, column in enumerate(X.T):
            frame = pd.DataFrame({"x": column, "time": time, "event": event.astype(int)})
            try:
                with warnings.catch_warnings():
                    # lifelines warns about convergence and separation; the p-value says enough
                    warnings.simplefilter("ignore")
                    fitter = CoxPHFitter(penalizer=self.penalizer).fit(frame, "time", "event")
                p_values[j] = fitter.summary.loc["x", "p"]
            except Exception as error:  # noqa: BLE001 - one degenerate feature must not stop the others
                self.errors_[j] = f"{type(error).__name__}: {error}"
        self.p_values_ = p_values
        support = np.nan_to_num(p_values, nan=np.inf) < self.p_threshold
        self.fallback_ = not support.any() and np.isfinite(p_values).any()
        if self.fallback_:
            support[np.nanargmin(p_values)] = True
        if not support.any():
            raise ValueError("univariate Cox selection: no feature could be fitted")
        self.support_ = support
        return self
