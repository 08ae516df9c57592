"""Calibration curve with per-bin bootstrap CIs.

As in the multimodal RF/MLP paper: predictions fall into equal-width probability bins;
each bin reports its mean predicted probability and observed positive fraction, and the
CI of the latter comes from resampling that bin's labels with replacement.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def calibration_table(
    y: np.ndarray, p: np.ndarray, n_bins: int, n_boot: int, seed: int, level: float
) -> pd.DataFrame:
    """``bin, bin_low, bin_high, n, mean_predicted, observed, ci_low, ci_high`` for the non-empty bins."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # p = 1 belongs to the last bin, not a bin of its own.
    bins = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    rng = np.random.default_rng(seed)
    tail = 50 * (1 - level)
    rows = []
    for b in range(n_bins):
        labels = y[bins == b]
        if not len(labels):
            continue
        fractions = rng.choice(labels, size=(n_boot, len(labels)), replace=True).mean(axis=1)
        low, high = np.percentile(fractions, [tail, 100 - tail])
        rows.append({
            "bin": b, "bin_low": edges[b], "bin_high": edges[b + 1], "n": len(labels),
            "mean_predicted": float(p[bins == b].mean()), "observed": float(labels.mean()),
            "ci_low": float(low), "ci_high": float(high),
        })
    return pd.DataFrame(rows)
