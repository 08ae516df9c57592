"""Readers against the model (CT multi-phase paper: Fig. 2K, Table S5).

Each ``reader_<name>`` manifest column holds one reader's 0/1 calls of the task's label.
Per scored set and pipeline: the reader's sensitivity, specificity and accuracy
(as the test part's metrics compute them) beside the model's at its training-part threshold, and
the model at the reader's operating points: its specificity at the reader's sensitivity
and its sensitivity at the reader's specificity (on the set's ROC curve). McNemar's exact
test (a binomial test of the discordant pairs, ``scipy.stats.binomtest``) compares the
model's calls at that matched point with the reader's: on the negatives for the
specificity, on the positives for the sensitivity, and on every case for the accuracy at
the model's own threshold. A last row per pipeline compares the model with the readers'
mean operating point (no paired test: no calls of a "mean reader" exist).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import roc_curve

from radiopath.classification.metrics import point_metrics

NA = float("nan")


def reader_columns(columns: Sequence[str], prefix: str | None) -> list[str]:
    """The manifest's reader columns (``prefix`` + name); none without a prefix."""
    return [c for c in columns if prefix and c.startswith(prefix) and len(c) > len(prefix)]


def rates(y: np.ndarray, calls: np.ndarray) -> tuple[float, float, float]:
    """Sensitivity, specificity and accuracy of 0/1 ``calls``; NaN where a class is absent."""
    values = point_metrics(y, calls, threshold=0.5, names=("sensitivity", "specificity", "accuracy"))
    return values["sensitivity"], values["specificity"], values["accuracy"]


def matched_threshold(y: np.ndarray, p: np.ndarray, *, sensitivity: float | None = None,
                      specificity: float | None = None) -> float:
    """The model's cut reaching at least the given sensitivity (best specificity) or specificity (best sensitivity)."""
    fpr, tpr, thresholds = roc_curve(y, p)
    if sensitivity is not None:
        ok = tpr >= sensitivity - 1e-12
        best = np.flatnonzero(ok)[np.argmin(fpr[ok])]
    else:
        ok = 1 - fpr >= specificity - 1e-12
        best = np.flatnonzero(ok)[np.argmax(tpr[ok])]
    return float(thresholds[best])


def mcnemar_p(truth: np.ndarray, first: np.ndarray, second: np.ndarray) -> float:
    """Exact McNemar p of two sets of calls on the same cases (1 when they never disagree in correctness)."""
    first_right, second_right = first == truth, second == truth
    b, c = int((first_right & ~second_right).sum()), int((~first_right & second_right).sum())
    return float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0


def _compare(y, p, threshold, reader_sens, reader_spec, calls=None) -> dict:
    model_calls = (p >= threshold).astype(int)
    model_sens, model_spec, model_acc = rates(y, model_calls)
    row = {"model_sensitivity": model_sens, "model_specificity": model_spec, "model_accuracy": model_acc,
           "model_specificity_at_reader_sensitivity": NA, "p_mcnemar_specificity": NA,
           "model_sensitivity_at_reader_specificity": NA, "p_mcnemar_sensitivity": NA,
           "p_mcnemar_accuracy": NA}
    if not 0 < y.sum() < len(y):
        return row
    at_sens = matched_threshold(y, p, sensitivity=reader_sens)
    at_spec = matched_threshold(y, p, specificity=reader_spec)
    row["model_specificity_at_reader_sensitivity"] = rates(y, (p >= at_sens).astype(int))[1]
    row["model_sensitivity_at_reader_specificity"] = rates(y, (p >= at_spec).astype(int))[0]
    if calls is not None:
        negative, positive = y == 0, y == 1
        row["p_mcnemar_specificity"] = mcnemar_p(y[negative], calls[negative], (p[negative] >= at_sens).astype(int))
        row["p_mcnemar_sensitivity"] = mcnemar_p(y[positive], calls[positive], (p[positive] >= at_spec).astype(int))
        row["p_mcnemar_accuracy"] = mcnemar_p(y, calls, model_calls)
    return row


def reader_table(*, scored: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """One row per set, pipeline and reader (then ``mean of readers``); ``scored`` as for the prognosis."""
    rows = []
    for (set_name, pipeline), part in scored.groupby(["set", "pipeline"], sort=False):
        readers = []
        for column in columns:
            calls = pd.to_numeric(part[column], errors="coerce")
            known = calls.notna().to_numpy()
            y, p = part["y"].to_numpy()[known], part["p"].to_numpy()[known]
            base = {"set": set_name, "pipeline": pipeline, "reader": column, "n": int(known.sum()),
                    "threshold": float(part["threshold"].iloc[0])}
            if not known.any():
                rows.append({**base, "reason": "no call of this reader in the set"})
                continue
            sens, spec, acc = rates(y, calls.to_numpy()[known].astype(int))
            readers.append((sens, spec))
            reason = "" if 0 < y.sum() < len(y) else "one class only: no matched operating point"
            rows.append({**base, "reader_sensitivity": sens, "reader_specificity": spec, "reader_accuracy": acc,
                         **_compare(y, p, base["threshold"], sens, spec, calls.to_numpy()[known].astype(int)),
                         "reason": reason})
        if len(readers) > 1 and np.isfinite(readers).all():
            sens, spec = np.mean(readers, axis=0)
            y, p = part["y"].to_numpy(), part["p"].to_numpy()
            rows.append({"set": set_name, "pipeline": pipeline, "reader": "mean of readers", "n": len(part),
                         "threshold": float(part["threshold"].iloc[0]), "reader_sensitivity": sens,
                         "reader_specificity": spec, "reader_accuracy": NA,
                         **_compare(y, p, float(part["threshold"].iloc[0]), sens, spec),
                         "reason": "mean operating point: no paired calls to test"})
    return pd.DataFrame(rows)
