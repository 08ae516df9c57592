"""Classification performance within subgroups (CT multi-phase paper: Fig. S3, S5, Tables S10-S11).

Per scored set (test part, external centres), pipeline and level of each subgroup column
(TNM stage, histology, centre): ROC AUC and, at the pipeline's training-part threshold,
sensitivity, specificity and precision, as the test part's metrics compute them
(:func:`radiopath.classification.metrics.point_metrics`). A subgroup
with one class only has no AUC (and no sensitivity or specificity for the missing class):
N/A, with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from radiopath.classification.metrics import point_metrics

METRICS = ("roc_auc", "sensitivity", "specificity", "precision")


def level_name(value) -> str:
    """A subgroup level as text: integers without a decimal point, empty cells as ``missing``."""
    if pd.isna(value):
        return "missing"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def subgroup_table(*, scored: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``set, pipeline, subgroup, level, n, positives, roc_auc, sensitivity, specificity, precision, reason``."""
    rows = []
    for (set_name, pipeline), part in scored.groupby(["set", "pipeline"], sort=False):
        threshold = float(part["threshold"].iloc[0])
        for column in (c for c in columns if c in part):
            levels = part[column].map(level_name)
            for level in sorted(levels.unique()):
                group = part[levels == level]
                y = group["y"].to_numpy(dtype=int)
                two_classes = 0 < y.sum() < len(y)
                rows.append({
                    "set": set_name, "pipeline": pipeline, "subgroup": column, "level": level, "n": len(group),
                    "positives": int(y.sum()),
                    **point_metrics(y, group["p"].to_numpy(), threshold=threshold, names=METRICS),
                    "threshold": threshold,
                    "reason": "" if two_classes else f"one class only ({'positive' if y.any() else 'negative'})",
                })
    return pd.DataFrame(rows)
