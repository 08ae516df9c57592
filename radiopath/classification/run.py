"""Cross-validated evaluation of classification pipelines on fixed patient-level splits.

Per pipeline and CV fold, a fresh pipeline is ``fit`` on the other folds' cases and
``predict_proba`` scores the held-out fold; the held-out test part is scored either by
the mean of the fold models (``ensemble``) or by one model refitted on every non-test
case (``refit``). Test cases never reach ``fit``, and a fold's cases never reach the
``fit`` that scores them, so whatever a pipeline fits stays inside its training part.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from radiopath.classification.base import CasePipeline, build_pipeline
from radiopath.classification.metrics import youden_threshold
from radiopath.classification.splits import TEST

log = logging.getLogger(__name__)
TEST_MODELS = ("ensemble", "refit")


@dataclass(frozen=True)
class PipelineSpec:
    """One compared model: ``label`` in the outputs, registry ``name`` and its builder ``kwargs``."""

    label: str
    name: str
    kwargs: Mapping = field(default_factory=dict)


@dataclass
class Evaluation:
    """Per-patient predictions of every pipeline that finished, their thresholds, and failures."""

    predictions: pd.DataFrame  # pipeline, case_id, split (cv | test), fold, y, p
    thresholds: pd.DataFrame  # pipeline, fold, threshold, auc (validation fold)
    failures: list[tuple[str, str]]  # (pipeline, error)


def _check_proba(label: str, p, n: int) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    if p.shape != (n,) or not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError(f"pipeline {label!r}: predict_proba must give {n} finite probabilities in [0, 1], "
                         f"got shape {p.shape}")
    return p


def _fit_predict(spec: PipelineSpec, seed: int, train: pd.DataFrame, y_train: np.ndarray,
                 held_out: list[pd.DataFrame]) -> list[np.ndarray]:
    """Fit a fresh pipeline on ``train`` only and score each frame of ``held_out``."""
    pipeline: CasePipeline = build_pipeline(spec.name, random_state=seed, **spec.kwargs)
    pipeline.fit(train.reset_index(drop=True), y_train)
    return [_check_proba(spec.label, pipeline.predict_proba(part.reset_index(drop=True)), len(part))
            for part in held_out]


def evaluate_pipeline(spec: PipelineSpec, cases: pd.DataFrame, splits: pd.DataFrame, seed: int,
                      test_model: str, progress: tqdm | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions (``split``, ``fold``, ``y``, ``p`` per case) and per-fold Youden thresholds of one pipeline."""
    if test_model not in TEST_MODELS:
        raise ValueError(f"evaluation.test_model must be one of {TEST_MODELS}, got {test_model!r}")
    if list(cases["case_id"]) != list(splits["case_id"]):
        raise ValueError("cases and splits must list the same case ids in the same order")
    cases = cases.reset_index(drop=True)
    fold, y = splits["fold"].to_numpy(), splits["y"].to_numpy()
    test, dev = fold == TEST, fold != TEST
    rows, thresholds, test_scores = [], [], []
    for k in sorted(set(fold[dev])):
        train, held = dev & (fold != k), fold == k
        parts = [cases[held]] + ([cases[test]] if test_model == "ensemble" else [])
        scores = _fit_predict(spec, seed + int(k), cases[train], y[train], parts)
        rows.append(pd.DataFrame({"case_id": cases.loc[held, "case_id"], "split": "cv", "fold": int(k),
                                  "y": y[held], "p": scores[0]}))
        thresholds.append({"fold": int(k), "threshold": youden_threshold(y[held], scores[0]),
                           "auc": _auc_or_nan(y[held], scores[0])})
        test_scores.extend(scores[1:])
        if progress is not None:
            progress.update()
    if test_model == "refit":
        test_scores = _fit_predict(spec, seed, cases[dev], y[dev], [cases[test]])
        if progress is not None:
            progress.update()
    rows.append(pd.DataFrame({"case_id": cases.loc[test, "case_id"], "split": "test", "fold": TEST,
                              "y": y[test], "p": np.mean(test_scores, axis=0)}))
    predictions = pd.concat(rows, ignore_index=True).assign(pipeline=spec.label)
    return predictions, pd.DataFrame(thresholds).assign(pipeline=spec.label)


def _auc_or_nan(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def evaluate(specs: list[PipelineSpec], cases: pd.DataFrame, splits: pd.DataFrame, seed: int,
             test_model: str, show_progress: bool = True) -> Evaluation:
    """Evaluate every pipeline on the same splits; a pipeline that raises is recorded and skipped."""
    n_folds = splits.loc[splits["fold"] != TEST, "fold"].nunique()
    total = len(specs) * (n_folds + (test_model == "refit"))
    predictions, thresholds, failures = [], [], []
    with tqdm(total=total, desc="pipelines x folds", unit="fit", disable=not show_progress) as progress:
        for spec in specs:
            progress.set_postfix_str(spec.label)
            try:
                p, t = evaluate_pipeline(spec, cases, splits, seed, test_model, progress)
            except Exception as err:  # one broken pipeline must not sink the comparison
                log.exception("pipeline %s failed", spec.label)
                failures.append((spec.label, f"{type(err).__name__}: {err}"))
                continue
            predictions.append(p)
            thresholds.append(t)
    columns = ["pipeline", "case_id", "split", "fold", "y", "p"]
    return Evaluation(
        predictions=pd.concat(predictions, ignore_index=True)[columns] if predictions else pd.DataFrame(columns=columns),
        thresholds=(pd.concat(thresholds, ignore_index=True) if thresholds
                    else pd.DataFrame(columns=["fold", "threshold", "auc", "pipeline"])),
        failures=failures,
    )
