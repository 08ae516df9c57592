"""Tables computed from an evaluation's predictions: metrics (test part, external centres), confusion
matrices, DeLong pairs, calibration, and the scored sets the clinical analyses read."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from radiopath.classification.calibration import calibration_table
from radiopath.classification.delong import delong_test
from radiopath.classification.metrics import score_predictions


def metrics_table(predictions: pd.DataFrame, thresholds: pd.DataFrame, n_boot: int, seed: int,
                  level: float) -> pd.DataFrame:
    """``pipeline, split, metric, value, ci_low, ci_high``.

    ``test`` rows: every metric on the held-out test cases with bootstrap CIs, thresholded at
    the mean of the validation folds' Youden thresholds. ``cv`` rows: that threshold and the
    validation folds' mean and sample std of the ROC AUC (no CI).
    """
    frames = []
    for pipeline, folds in thresholds.groupby("pipeline", sort=False):
        threshold = float(folds["threshold"].mean())
        test = predictions[(predictions["pipeline"] == pipeline) & (predictions["split"] == "test")]
        scores = score_predictions(test["y"].to_numpy(), test["p"].to_numpy(), threshold, n_boot, seed, level)
        cv = pd.DataFrame({
            "metric": ["youden_threshold", "roc_auc_mean", "roc_auc_std"],
            "value": [threshold, folds["auc"].mean(), folds["auc"].std(ddof=1)],
        })
        frames += [scores.assign(pipeline=pipeline, split="test"), cv.assign(pipeline=pipeline, split="cv")]
    columns = ["pipeline", "split", "metric", "value", "ci_low", "ci_high"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).reindex(columns=columns)


def scored_sets(predictions: pd.DataFrame, thresholds: pd.DataFrame, cases: pd.DataFrame,
                centre_column: str) -> pd.DataFrame:
    """Predictions of the cases no model was fitted on, each in its ``set``: ``test`` (the held-out test
    part) or, for an external case, its centre; with the pipeline's ``threshold`` (mean validation-fold
    Youden threshold: training cases only) and the case's manifest columns."""
    scored = predictions[predictions["split"] != "cv"]
    columns = [c for c in cases.columns if c == "case_id" or c not in scored.columns]
    scored = scored.merge(cases[columns], on="case_id", how="left")
    external = scored["split"] == "external"
    names = scored[centre_column].astype(str) if external.any() else ""
    threshold = thresholds.groupby("pipeline")["threshold"].mean()
    return scored.assign(set=np.where(external, names, "test"), threshold=scored["pipeline"].map(threshold))


def external_metrics_tables(scored: pd.DataFrame, n_boot: int, seed: int, level: float) -> dict[str, pd.DataFrame]:
    """Centre -> ``pipeline, metric, value, ci_low, ci_high`` on that external centre, as for the test part."""
    tables = {}
    for centre, part in scored[scored["split"] == "external"].groupby("set", sort=False):
        frames = [score_predictions(rows["y"].to_numpy(), rows["p"].to_numpy(), float(rows["threshold"].iloc[0]),
                                    n_boot, seed, level).assign(pipeline=pipeline)
                  for pipeline, rows in part.groupby("pipeline", sort=False)]
        table = pd.concat(frames, ignore_index=True)
        tables[str(centre)] = table[["pipeline", "metric", "value", "ci_low", "ci_high"]]
    return tables


def confusion_tables(scored: pd.DataFrame) -> pd.DataFrame:
    """``set, pipeline, threshold, tn, fp, fn, tp`` at each pipeline's training-part threshold."""
    rows = []
    for (set_name, pipeline), part in scored.groupby(["set", "pipeline"], sort=False):
        threshold = float(part["threshold"].iloc[0])
        matrix = confusion_matrix(part["y"].astype(int), (part["p"] >= threshold).astype(int), labels=[0, 1])
        rows.append({"set": set_name, "pipeline": pipeline, "threshold": threshold,
                     **dict(zip(("tn", "fp", "fn", "tp"), map(int, matrix.ravel())))})
    return pd.DataFrame(rows, columns=["set", "pipeline", "threshold", "tn", "fp", "fn", "tp"])


def paired_test_scores(predictions: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Test-split labels and a ``case x pipeline`` matrix of probabilities (same cases for all)."""
    test = predictions[predictions["split"] == "test"]
    wide = test.pivot(index="case_id", columns="pipeline", values="p")
    wide = wide[list(dict.fromkeys(test["pipeline"]))]
    if wide.isna().any().any():
        raise ValueError("pipelines were scored on different test cases; DeLong's test needs paired predictions")
    y = test.drop_duplicates("case_id").set_index("case_id").loc[wide.index, "y"].to_numpy(dtype=int)
    return y, wide


def delong_table(predictions: pd.DataFrame, level: float) -> pd.DataFrame:
    """Every ordered pair of pipelines: AUCs, difference a - b, its DeLong variance, z, p and CI."""
    columns = ["pipeline_a", "pipeline_b", "auc_a", "auc_b", "difference", "variance", "z", "p_value",
               "ci_low", "ci_high"]
    if predictions.empty:
        return pd.DataFrame(columns=columns)
    y, wide = paired_test_scores(predictions)
    rows = []
    for a, b in permutations(wide.columns, 2):
        result = delong_test(y, wide[a].to_numpy(), wide[b].to_numpy(), level)
        rows.append({"pipeline_a": a, "pipeline_b": b, **vars(result)})
    return pd.DataFrame(rows, columns=columns)


def calibration_tables(predictions: pd.DataFrame, n_bins: int, n_boot: int, seed: int,
                       level: float) -> pd.DataFrame:
    """Calibration bins of each pipeline's test predictions (``pipeline`` first)."""
    frames = []
    for pipeline, test in predictions[predictions["split"] == "test"].groupby("pipeline", sort=False):
        table = calibration_table(test["y"].to_numpy(), test["p"].to_numpy(), n_bins, n_boot, seed, level)
        frames.append(table.assign(pipeline=pipeline))
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    return table[["pipeline", *[c for c in table.columns if c != "pipeline"]]]
