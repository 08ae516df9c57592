"""Cross-validated evaluation of classification pipelines on fixed patient-level splits.

Per pipeline and CV fold, a fresh pipeline is ``fit`` on the other folds' cases and
``predict_proba`` scores the held-out fold; the held-out test part is scored either by
the mean of the fold models (``ensemble``) or by one model refitted on every non-test
case (``refit``). Test cases never reach ``fit``, and a fold's cases never reach the
``fit`` that scores them, so whatever a pipeline fits stays inside its training part.

Before any fit, the per-case inputs the pipelines declare (:meth:`CasePipeline.input_functions`:
crops, radiomics, slices; nothing fitted) are computed for every case that lacks them,
in parallel over cases. Then each fold fits every pipeline in turn, inside
:func:`~radiopath.classification.sharing.shared_fits` so pipelines built on the same
sub-model train it once; folds run in parallel over ``jobs`` processes. With nested CV
(``nested_folds``) a pipeline with a ``grid`` is first tuned by inner folds of the fit's own
training part (:mod:`~radiopath.classification.nested`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from radiopath.classification import ct_inputs
from radiopath.classification.base import PIPELINES, CasePipeline
from radiopath.classification.metrics import youden_threshold
from radiopath.classification.nested import tune
from radiopath.classification.parallel import run_jobs
from radiopath.classification.sharing import shared_fits
from radiopath.classification.splits import TEST

log = logging.getLogger(__name__)
TEST_MODELS = ("ensemble", "refit")


@dataclass(frozen=True)
class PipelineSpec:
    """One compared model: ``label`` in the outputs, registry ``name``, its builder ``kwargs``, and the
    ``grid`` (dotted kwargs key -> values) nested CV tunes."""

    label: str
    name: str
    kwargs: Mapping = field(default_factory=dict)
    grid: Mapping = field(default_factory=dict)


@dataclass
class Evaluation:
    """Per-patient predictions of every pipeline that finished, their thresholds, and failures."""

    predictions: pd.DataFrame  # pipeline, case_id, split (cv | test | external), fold, y, p
    thresholds: pd.DataFrame  # pipeline, fold, threshold, auc (validation fold)
    failures: list[tuple[str, str]]  # (pipeline, error)
    tuning: pd.DataFrame  # nested CV: pipeline, fold, params, inner_auc_mean, inner_auc_std, chosen
    tables: list[tuple[str, int, str, pd.DataFrame]]  # (pipeline, fold, name, table) of fitted_tables()


@dataclass
class FitOutcome:
    """What one fit of one pipeline gives: scores of each scored part, its tables, the nested-CV scores."""

    scores: list[np.ndarray]
    tables: dict[str, pd.DataFrame]
    tuning: pd.DataFrame | None


@dataclass(frozen=True)
class Fit:
    """One training part: ``fold`` it leaves out (``TEST`` for the refit), seed, and the scored parts."""

    fold: int
    seed: int
    train: np.ndarray  # bool per case
    scored: tuple[np.ndarray, ...]  # bool per case: the held-out fold (and the test part), or the test part


def _check_proba(label: str, p, n: int) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    if p.shape != (n,) or not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError(f"pipeline {label!r}: predict_proba must give {n} finite probabilities in [0, 1], "
                         f"got shape {p.shape}")
    return p


def _fitted(name: str, kwargs: Mapping, seed: int, train: pd.DataFrame, y_train: np.ndarray) -> CasePipeline:
    pipeline: CasePipeline = PIPELINES.create(name, random_state=seed, **kwargs)
    return pipeline.fit(train.reset_index(drop=True), y_train) or pipeline


def _fit_predict(spec: PipelineSpec, seed: int, train: pd.DataFrame, y_train: np.ndarray,
                 held_out: list[pd.DataFrame], nested_folds: int | None) -> FitOutcome:
    """Fit a fresh pipeline on ``train`` only (tuned on ``train`` only when nested) and score each frame of ``held_out``."""
    kwargs, tuning = spec.kwargs, None
    if nested_folds and spec.grid:
        def fit_predict(point_kwargs, inner_train, inner_y, inner_held):
            inner = _fitted(spec.name, point_kwargs, seed, inner_train, inner_y)
            return _check_proba(spec.label, inner.predict_proba(inner_held.reset_index(drop=True)), len(inner_held))

        kwargs, tuning = tune(label=spec.label, kwargs=spec.kwargs, grid=spec.grid, cases=train.reset_index(drop=True),
                              y=y_train, inner_folds=nested_folds, seed=seed, fit_predict=fit_predict)
    pipeline = _fitted(spec.name, kwargs, seed, train, y_train)
    scores = [_check_proba(spec.label, pipeline.predict_proba(part.reset_index(drop=True)), len(part))
              for part in held_out]
    return FitOutcome(scores, pipeline.fitted_tables(), tuning)


def plan_fits(splits: pd.DataFrame, seed: int, test_model: str) -> list[Fit]:
    """The fits of the evaluation: one per CV fold (seed ``seed + k``), plus the refit for ``refit``."""
    if test_model not in TEST_MODELS:
        raise ValueError(f"evaluation.test_model must be one of {TEST_MODELS}, got {test_model!r}")
    fold = splits["fold"].to_numpy()
    test, dev = fold == TEST, fold != TEST
    fits = [Fit(int(k), seed + int(k), dev & (fold != k), (fold == k,) + ((test,) if test_model == "ensemble" else ()))
            for k in sorted(set(fold[dev]))]
    if test_model == "refit":
        fits.append(Fit(TEST, seed, dev, (test,)))
    return fits


def fit_fold(specs: list[PipelineSpec], cases: pd.DataFrame, y: np.ndarray, fit: Fit,
             nested_folds: int | None) -> dict[str, FitOutcome | str]:
    """Every pipeline fitted on one training part: label -> its outcome, or the error text."""
    results: dict[str, FitOutcome | str] = {}
    with shared_fits():
        for spec in specs:
            try:
                results[spec.label] = _fit_predict(spec, fit.seed, cases[fit.train], y[fit.train],
                                                   [cases[part] for part in fit.scored], nested_folds)
            except Exception as err:  # one broken pipeline must not sink the comparison
                log.exception("pipeline %s failed (fold %d)", spec.label, fit.fold)
                results[spec.label] = f"{type(err).__name__}: {err}"
    return results


def prepare_inputs(specs: list[PipelineSpec], cases: pd.DataFrame, jobs: int = 1, threads: int | None = None,
                   show_progress: bool = True) -> None:
    """Compute every pipeline's per-case inputs that are pending (cache on, entry missing), ``jobs`` cases at a time."""
    functions = []
    for spec in specs:
        try:
            functions += PIPELINES.create(spec.name, **spec.kwargs).input_functions()
        except Exception:  # a pipeline that cannot be built fails, and is reported, in its fits
            continue
    rows = [row for row in ct_inputs.rows(cases) if any(ct_inputs.pending(f, row) for f in functions)]
    results = run_jobs(ct_inputs.prepare_inputs, [(row, functions) for row in rows], jobs, threads)
    for errors in tqdm(results, total=len(rows), desc="inputs", unit="case", disable=not show_progress or not rows):
        for error in errors:
            log.warning("input not computed: %s (the pipeline that needs it reports it)", error)


def evaluate(specs: list[PipelineSpec], cases: pd.DataFrame, splits: pd.DataFrame, seed: int,
             test_model: str, show_progress: bool = True, jobs: int = 1, threads: int | None = None,
             nested_folds: int | None = None) -> Evaluation:
    """Evaluate every pipeline on the same splits; a pipeline that raises in any fit is recorded and skipped.

    ``jobs`` worker processes compute the inputs (over cases) and the fits (over folds),
    each with at most ``threads`` threads; results do not depend on either. ``nested_folds``:
    tune each pipeline's grid by that many inner folds of every training part (None: no tuning).
    Cases of ``splits``' part ``external`` are scored like the test part and predicted as ``external``.
    """
    if list(cases["case_id"]) != list(splits["case_id"]):
        raise ValueError("cases and splits must list the same case ids in the same order")
    cases = cases.reset_index(drop=True)
    y = splits["y"].to_numpy()
    fits = plan_fits(splits, seed, test_model)
    prepare_inputs(specs, cases, jobs, threads, show_progress)
    results = list(tqdm(run_jobs(fit_fold, [(specs, cases, y, fit, nested_folds) for fit in fits], jobs, threads),
                        total=len(fits), desc=f"folds x {len(specs)} pipelines", unit="fold",
                        disable=not show_progress))
    predictions, thresholds, failures, tuning, tables = [], [], [], [], []
    test = splits["fold"].to_numpy() == TEST
    parts = splits["part"].to_numpy()[test]
    for spec in specs:
        outcomes = [result[spec.label] for result in results]
        error = next((outcome for outcome in outcomes if isinstance(outcome, str)), None)
        if error is not None:
            failures.append((spec.label, error))
            continue
        p, t = _collect(spec.label, cases, y, test, parts, fits, [outcome.scores for outcome in outcomes])
        predictions.append(p)
        thresholds.append(t)
        for fit, outcome in zip(fits, outcomes):
            tables += [(spec.label, fit.fold, name, table) for name, table in outcome.tables.items()]
            if outcome.tuning is not None:
                tuning.append(outcome.tuning.assign(pipeline=spec.label, fold=fit.fold))
    columns = ["pipeline", "case_id", "split", "fold", "y", "p"]
    return Evaluation(
        predictions=(pd.concat(predictions, ignore_index=True)[columns] if predictions
                     else pd.DataFrame(columns=columns)),
        thresholds=(pd.concat(thresholds, ignore_index=True) if thresholds
                    else pd.DataFrame(columns=["fold", "threshold", "auc", "pipeline"])),
        failures=failures,
        tuning=(pd.concat(tuning, ignore_index=True) if tuning else pd.DataFrame(
            columns=["pipeline", "fold", "params", "inner_auc_mean", "inner_auc_std", "chosen"])),
        tables=tables,
    )


def _collect(label: str, cases: pd.DataFrame, y: np.ndarray, test: np.ndarray, test_parts: np.ndarray,
             fits: list[Fit], scores: list[list[np.ndarray]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions (``split``, ``fold``, ``y``, ``p`` per case) and per-fold Youden thresholds of one pipeline.

    The cases no model was fitted on (``test``) get their part (``test`` or ``external``) as ``split``.
    """
    rows, thresholds, test_scores = [], [], []
    for fit, fit_scores in zip(fits, scores):
        if fit.fold == TEST:  # the refit scores the test part only
            test_scores.extend(fit_scores)
            continue
        held, p = fit.scored[0], fit_scores[0]
        rows.append(pd.DataFrame({"case_id": cases.loc[held, "case_id"], "split": "cv", "fold": fit.fold,
                                  "y": y[held], "p": p}))
        thresholds.append({"fold": fit.fold, "threshold": youden_threshold(y[held], p), "auc": _auc_or_nan(y[held], p)})
        test_scores.extend(fit_scores[1:])
    rows.append(pd.DataFrame({"case_id": cases.loc[test, "case_id"], "split": test_parts, "fold": TEST,
                              "y": y[test], "p": np.mean(test_scores, axis=0)}))
    predictions = pd.concat(rows, ignore_index=True).assign(pipeline=label)
    return predictions, pd.DataFrame(thresholds).assign(pipeline=label)


def _auc_or_nan(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
