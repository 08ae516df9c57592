"""Test-split metrics: ROC AUC, PR-AUC, thresholded scores at the Youden threshold, Brier.

Every metric comes with a percentile bootstrap CI over the test cases (resamples
with one class only are skipped, as an AUC is undefined there).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def youden_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability cut maximising sensitivity + specificity - 1 (highest cut among ties)."""
    fpr, tpr, thresholds = roc_curve(y, p)
    # roc_curve's first cut is +inf (nothing positive); a fold where no cut helps gets 1.0.
    return float(min(thresholds[int(np.argmax(tpr - fpr))], 1.0))


def _confusion(y: np.ndarray, predicted: np.ndarray) -> tuple[int, int, int, int]:
    tp = int(np.sum(predicted & (y == 1)))
    tn = int(np.sum(~predicted & (y == 0)))
    return tp, tn, int(np.sum(predicted & (y == 0))), int(np.sum(~predicted & (y == 1)))


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def metric_functions(threshold: float) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    """``name -> f(y, p)`` for every reported metric; thresholded ones predict positive at ``p >= threshold``."""

    def thresholded(kind: str) -> Callable[[np.ndarray, np.ndarray], float]:
        def score(y, p):
            tp, tn, fp, fn = _confusion(y, p >= threshold)
            return {
                "accuracy": _ratio(tp + tn, len(y)),
                "f1": _ratio(2 * tp, 2 * tp + fp + fn),
                "sensitivity": _ratio(tp, tp + fn),
                "specificity": _ratio(tn, tn + fp),
            }[kind]

        return score

    return {
        "roc_auc": roc_auc_score,
        "pr_auc": average_precision_score,
        **{kind: thresholded(kind) for kind in ("accuracy", "f1", "sensitivity", "specificity")},
        "brier": lambda y, p: float(np.mean((p - y) ** 2)),
    }


def bootstrap_indices(y: np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """``n_boot`` resamples of the case indices (with replacement) that hold both classes."""
    rng = np.random.default_rng(seed)
    resamples = []
    for _ in range(n_boot):
        index = rng.integers(0, len(y), len(y))
        if 0 < y[index].sum() < len(index):
            resamples.append(index)
    return resamples


def score_predictions(y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int, seed: int, level: float) -> pd.DataFrame:
    """``metric, value, ci_low, ci_high`` on one set of test predictions."""
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    resamples = bootstrap_indices(y, n_boot, seed)
    tail = 50 * (1 - level)
    rows = []
    for name, score in metric_functions(threshold).items():
        values = np.array([score(y[index], p[index]) for index in resamples])
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [tail, 100 - tail]) if len(values) else (np.nan, np.nan)
        rows.append({"metric": name, "value": float(score(y, p)), "ci_low": float(low), "ci_high": float(high)})
    return pd.DataFrame(rows)
