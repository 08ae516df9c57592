"""DeLong's test for paired ROC AUCs, with the fast midrank algorithm of Sun & Xu (2014).

DeLong et al. (1988) write each model's AUC as a mean of structural components:
``V10_i`` (one per positive case: the fraction of negatives it outranks, ties 1/2) and
``V01_j`` (one per negative case: the fraction of positives that outrank it). Their
sample covariances across models give the AUCs' covariance matrix
``S = S10 / m + S01 / n`` (m positives, n negatives). Sun & Xu obtain every component
from three midrank computations per model, O((m + n) log(m + n)) instead of O(m n).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


def midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` with ties given the mean of their ranks."""
    return stats.rankdata(values, method="average")


def _split_classes(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(k, m)`` positive and ``(k, n)`` negative scores; both classes must be present."""
    y = np.asarray(y)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    if scores.shape[1] != len(y):
        raise ValueError(f"scores have {scores.shape[1]} cases but y has {len(y)}")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"y must be 0/1, got values {sorted(set(np.unique(y)))}")
    positive = y == 1
    if positive.all() or not positive.any():
        raise ValueError(f"DeLong's test needs both classes; got {int(positive.sum())} positives of {len(y)}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    return scores[:, positive], scores[:, ~positive]


def structural_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs ``(k,)`` and the components ``V10 (k, m)``, ``V01 (k, n)`` of ``k`` score rows."""
    pos, neg = _split_classes(y, scores)
    m, n = pos.shape[1], neg.shape[1]
    aucs, v10, v01 = [], [], []
    for x, z in zip(pos, neg):
        tx, tz_neg, t_all = midranks(x), midranks(z), midranks(np.concatenate([x, z]))
        # A positive's rank among all cases minus its rank among positives counts the
        # negatives below it (ties 1/2); likewise for negatives.
        v10.append((t_all[:m] - tx) / n)
        v01.append(1.0 - (t_all[m:] - tz_neg) / m)
        aucs.append((t_all[:m].sum() - m * (m + 1) / 2) / (m * n))
    return np.array(aucs), np.array(v10), np.array(v01)


def delong_covariance(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs ``(k,)`` and their DeLong covariance matrix ``(k, k)`` for score rows on the same cases."""
    aucs, v10, v01 = structural_components(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(aucs), len(aucs)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(aucs), len(aucs)))
    return aucs, s10 / m + s01 / n


@dataclass(frozen=True)
class DeLongComparison:
    """AUC(a) - AUC(b) on the same cases: variance, z, two-sided p and a CI of the difference."""

    auc_a: float
    auc_b: float
    difference: float
    variance: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float


def delong_test(y: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, level: float = 0.95) -> DeLongComparison:
    """DeLong's test of equal AUCs for two models' scores on the same cases."""
    aucs, cov = delong_covariance(y, np.vstack([scores_a, scores_b]))
    difference = float(aucs[0] - aucs[1])
    variance = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    half = stats.norm.ppf(0.5 + level / 2) * np.sqrt(max(variance, 0.0))
    if variance > 0:
        z = difference / np.sqrt(variance)
        p_value = float(2 * stats.norm.sf(abs(z)))
    else:
        # Identical rankings (or a degenerate sample): nothing to test.
        z, p_value = (0.0, 1.0) if difference == 0 else (float(np.sign(difference) * np.inf), 0.0)
    return DeLongComparison(
        float(aucs[0]), float(aucs[1]), difference, variance, float(z), p_value, difference - half, difference + half
    )
