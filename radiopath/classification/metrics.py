"""Test-split metrics: ROC AUC, PR-AUC, thresholded scores at the Youden threshold (accuracy, F1,
sensitivity, specificity, precision), Brier.

Every metric comes with a percentile bootstrap CI over the test cases (resamples
with one class only are skipped, as an AUC is undefined there). A resample is a row
of case weights (how often each case was drawn), so every metric is computed for all
resamples at once: ROC AUC as the weighted Mann-Whitney statistic, PR-AUC as
scikit-learn's average precision over the distinct scores, the rest from weighted
confusion counts. With unit weights they are the plain metrics.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

Metric = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (weights (B, n), y, p) -> (B,)


def youden_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability cut maximising sensitivity + specificity - 1 (highest cut among ties)."""
    fpr, tpr, thresholds = roc_curve(y, p)
    # roc_curve's first cut is +inf (nothing positive); a fold where no cut helps gets 1.0.
    return float(min(thresholds[int(np.argmax(tpr - fpr))], 1.0))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ratio, NaN where the denominator is 0."""
    out = np.full(np.shape(numerator), np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def roc_auc(weights: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUC: P(score of a positive > score of a negative), ties count 1/2."""
    pos, neg = y == 1, y == 0
    wins = (p[pos, None] > p[None, neg]) + 0.5 * (p[pos, None] == p[None, neg])
    w_pos, w_neg = weights[:, pos], weights[:, neg]
    pairs = np.einsum("bi,ij,bj->b", w_pos, wins, w_neg)
    return _ratio(pairs, w_pos.sum(axis=1) * w_neg.sum(axis=1))


def average_precision(weights: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Weighted average precision: sum over distinct scores (high to low) of recall gain x precision."""
    cuts = np.unique(p)[::-1]
    above = p[None, :] >= cuts[:, None]  # (cuts, n): predicted positive at each cut
    tp = weights @ (above & (y == 1)).T  # (B, cuts)
    fp = weights @ (above & (y == 0)).T
    recall = _ratio(tp, tp[:, -1:])
    gain = np.diff(recall, axis=1, prepend=0.0)
    precision = np.nan_to_num(_ratio(tp, tp + fp))  # a cut with no predicted positive has no recall gain
    return np.sum(gain * precision, axis=1)


def confusion_metrics(threshold: float) -> dict[str, Metric]:
    """Accuracy, F1, sensitivity, specificity and precision predicting positive at ``p >= threshold``."""

    def counts(weights, y, p):
        predicted = p >= threshold
        return (weights @ (predicted & (y == 1)), weights @ (~predicted & (y == 0)),
                weights @ (predicted & (y == 0)), weights @ (~predicted & (y == 1)))

    def accuracy(w, y, p):
        tp, tn, _, _ = counts(w, y, p)
        return _ratio(tp + tn, w.sum(axis=1))

    def f1(w, y, p):
        tp, _, fp, fn = counts(w, y, p)
        return _ratio(2 * tp, 2 * tp + fp + fn)

    def sensitivity(w, y, p):
        tp, _, _, fn = counts(w, y, p)
        return _ratio(tp, tp + fn)

    def specificity(w, y, p):
        _, tn, fp, _ = counts(w, y, p)
        return _ratio(tn, tn + fp)

    def precision(w, y, p):
        tp, _, fp, _ = counts(w, y, p)
        return _ratio(tp, tp + fp)

    return {"accuracy": accuracy, "f1": f1, "sensitivity": sensitivity, "specificity": specificity,
            "precision": precision}


def brier(weights: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Weighted mean squared difference between probability and label."""
    return _ratio(weights @ (p - y) ** 2, weights.sum(axis=1))


def metric_functions(threshold: float) -> dict[str, Metric]:
    """``name -> f(weights, y, p)`` for every reported metric, in report order."""
    return {"roc_auc": roc_auc, "pr_auc": average_precision, **confusion_metrics(threshold), "brier": brier}


def point_metrics(y: np.ndarray, p: np.ndarray, *, threshold: float, names: tuple[str, ...]) -> dict[str, float]:
    """The metrics ``names`` of :func:`metric_functions` on these cases once, without resampling (NaN where undefined)."""
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    functions, weights = metric_functions(threshold), np.ones((1, len(y)))
    return {name: float(functions[name](weights, y, p)[0]) for name in names}


def bootstrap_weights(y: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """``(B, n)`` draw counts of ``n_boot`` resamples with replacement; those with one class only are dropped."""
    rng = np.random.default_rng(seed)
    # One draw per resample, as the reported CIs have always been drawn (same seed, same resamples).
    index = np.array([rng.integers(0, len(y), len(y)) for _ in range(n_boot)]).reshape(n_boot, len(y))
    positives = y[index].sum(axis=1)
    index = index[(positives > 0) & (positives < len(y))]
    weights = np.zeros((len(index), len(y)))
    np.add.at(weights, (np.arange(len(index))[:, None], index), 1.0)
    return weights


def score_predictions(y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int, seed: int, level: float) -> pd.DataFrame:
    """``metric, value, ci_low, ci_high`` on one set of test predictions."""
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    weights = bootstrap_weights(y, n_boot, seed)
    tail = 50 * (1 - level)
    functions = metric_functions(threshold)
    point = point_metrics(y, p, threshold=threshold, names=tuple(functions))
    rows = []
    for name, metric in functions.items():
        values = metric(weights, y, p)
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [tail, 100 - tail]) if len(values) else (np.nan, np.nan)
        rows.append({"metric": name, "value": point[name], "ci_low": float(low), "ci_high": float(high)})
    return pd.DataFrame(rows)
