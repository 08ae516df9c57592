"""Cross-validated benchmark: per outer fold and model, tune on the training part, score the test part.

Nothing is skipped silently: a fold without test events, a metric that cannot
be computed, a model that does not converge or raises each leave a row with
the reason in ``note``, and the other folds and models go on.
"""

from __future__ import annotations

import tempfile
import traceback
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from radiopath.survival import metrics
from radiopath.survival.data import SurvivalFold
from radiopath.survival.models import make_estimator, make_pipeline, param_grid


@dataclass
class BenchmarkResult:
    """Everything the benchmark writes: long metric table, predictions and per-fold settings."""

    metrics: pd.DataFrame
    predictions: pd.DataFrame
    folds: dict
    errors: list[str] = field(default_factory=list)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std over the folds that have a value; ``n_folds`` counts them, ``n_na`` the others.

    An N/A fold (NaN, its reason in the metric table's ``note``) is never
    averaged in: no events, no survival function, a failed fit, or a score
    refused as impossible.
    """
    grouped = table.dropna(subset=["value"]).groupby(["model", "metric"], sort=False)["value"]
    stats = grouped.agg(mean="mean", std="std", n_folds="count")
    index = pd.MultiIndex.from_frame(table[["model", "metric"]].drop_duplicates())
    stats = stats.reindex(index)
    stats["n_folds"] = stats["n_folds"].fillna(0).astype(int)
    stats["n_na"] = table["value"].isna().groupby([table["model"], table["metric"]]).sum().reindex(index).astype(int)
    return stats.reset_index()


def format_summary(summary: pd.DataFrame) -> str:
    """The closing table: one row per metric, one column per model, ``mean ± std (n folds)``.

    With N/A folds the count reads ``(n of N)``; their reasons are in ``metrics.csv``.
    """
    cells = summary.assign(
        cell=[
            _summary_cell(m, s, n_folds=n, n_na=k)
            for m, s, n, k in zip(summary["mean"], summary["std"], summary["n_folds"], summary["n_na"])
        ]
    )
    table = cells.pivot(index="metric", columns="model", values="cell")
    order = [m for m in metrics.METRICS if m in table.index]
    return table.loc[order, list(dict.fromkeys(summary["model"]))].to_string()


def _summary_cell(mean: float, std: float, *, n_folds: int, n_na: int) -> str:
    if n_folds == 0:
        return "N/A"
    value = f"{mean:.3f} ± {std:.3f}" if n_folds > 1 else f"{mean:.3f}"
    return f"{value} ({n_folds} of {n_folds + n_na})" if n_na else f"{value} ({n_folds})"


def _score(fold: SurvivalFold, final, risk: np.ndarray, tau: float, times, grid_error: str | None) -> dict:
    """Every metric of one fitted model on one test fold: name -> (value, note)."""
    y_train, y_test = fold.y_train, fold.y_test
    if not y_test["event"].any():
        return {name: (np.nan, "no events in the test fold: metric undefined") for name in metrics.METRICS}
    computations = {
        "c_index": lambda: metrics.harrell_c(y_test, risk),
        "c_ipcw": lambda: metrics.uno_c(y_train, y_test, risk, tau),
    }
    if grid_error is None:
        computations["cd_auc"] = lambda: metrics.mean_cd_auc(y_train, y_test, risk, times)
        if hasattr(final, "predict_survival_function"):
            computations["ibs"] = lambda: metrics.ibs(
                y_train, y_test, final.predict_survival_function(fold.X_test), times
            )
    result = {}
    for name in metrics.METRICS:
        if name not in computations:
            reason = grid_error or f"N/A: {type(final[-1]).__name__} gives no survival function"
            result[name] = (np.nan, reason)
            continue
        try:
            result[name] = metrics.refuse_impossible(name, computations[name]())
        except Exception as error:  # noqa: BLE001 - one undefined metric must not hide the others
            result[name] = (np.nan, f"{type(error).__name__}: {error}")
    note = f"tau={tau:.6g}"
    result["c_ipcw"] = (result["c_ipcw"][0], "; ".join(filter(None, [note, result["c_ipcw"][1]])))
    return result


def tune_and_fit(name: str, fold: SurvivalFold, cfg, tau: float, memory) -> tuple:
    """Grid search on the training part (inner stratified CV), then a final fit with the best parameters.

    Returns the fitted pipeline and its settings (grid, choice, selected features, fit warnings).
    """
    pipeline = make_pipeline(
        make_estimator(name, cfg.estimators[name], cfg.seed), dict(cfg.selection), memory=memory
    )
    grid = param_grid(name, cfg.estimators[name], clone(pipeline), fold.X_train, fold.y_train)
    inner = StratifiedKFold(n_splits=cfg.tuning.inner_folds, shuffle=True, random_state=cfg.seed)
    splits = list(inner.split(fold.X_train, fold.y_train["event"]))
    search = GridSearchCV(
        pipeline,
        grid,
        scoring=metrics.tuning_scorer(cfg.tuning.score, fold.y_train, tau),
        cv=splits,
        n_jobs=cfg.tuning.n_jobs,
        error_score=np.nan,
        refit=False,
    )
    with warnings.catch_warnings():
        # candidates that fail or do not converge in inner CV just score NaN or lower
        warnings.simplefilter("ignore")
        search.fit(fold.X_train, fold.y_train)
    scores = search.cv_results_["mean_test_score"]
    if np.isnan(scores).all():
        raise RuntimeError("every hyperparameter candidate failed in the inner cross-validation")
    best = int(np.nanargmax(scores))
    chosen = search.cv_results_["params"][best]

    final = clone(pipeline).set_params(**chosen)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        final.fit(fold.X_train, fold.y_train)
    fit_warnings = sorted(
        {f"{w.category.__name__}: {w.message}" for w in caught if issubclass(w.category, ConvergenceWarning)}
    )
    settings = {
        "grid": {k: [_plain(v) for v in values] for k, values in grid.items()},
        "chosen": {k: _plain(v) for k, v in chosen.items()},
        "inner_cv_score": float(scores[best]),
        "inner_cv_failed_candidates": int(np.isnan(scores).sum()),
        "selected_features": [str(f) for f in final[:-2].get_feature_names_out()],
        # no feature passed the p-value threshold, the best one was kept
        "univariate_cox_fallback": bool("univariate_cox" in final.named_steps and final["univariate_cox"].fallback_),
        "fit_warnings": fit_warnings,
    }
    return final, settings


def _plain(value):
    """JSON-friendly hyperparameter values (numpy scalars and Coxnet's one-alpha lists)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def run_benchmark(folds: list[SurvivalFold], cfg) -> BenchmarkResult:
    """Tune, fit and score every configured model on every outer fold."""
    rows, predictions, fold_settings, errors = [], [], {}, []
    # the models' linear algebra is small (a few hundred features): one thread makes the results
    # independent of the core count, and on a busy 2-core node a 205 x 205 solve took 16-220 ms
    # on two OpenBLAS threads against 0.6-1 ms on one
    with threadpool_limits(limits=cfg.threads), tempfile.TemporaryDirectory(
        prefix="radiopath-survival-cache-"
    ) as cache, tqdm(total=len(folds) * len(cfg.models), desc="survival", unit="model", dynamic_ncols=True) as bar:
        for fold in folds:
            tau = metrics.tau_for(fold.y_train, cfg.metrics.tau_quantile)
            times, grid_error = None, None
            try:
                times = metrics.time_grid(
                    fold.y_train, fold.y_test, list(cfg.metrics.time_quantiles), cfg.metrics.time_grid_size
                )
            except ValueError as error:
                grid_error = f"ValueError: {error}"
            fold_settings[fold.fold] = {
                "n_train": len(fold.y_train),
                "n_test": len(fold.y_test),
                "events_train": int(fold.y_train["event"].sum()),
                "events_test": int(fold.y_test["event"].sum()),
                "tau": tau,
                "time_grid": None if times is None else times.tolist(),
                "models": {},
            }
            for name in cfg.models:
                bar.set_postfix_str(f"fold {fold.fold} {name}")
                try:
                    if not fold.y_train["event"].any():
                        raise ValueError("no events in the training part: nothing to fit")
                    final, settings = tune_and_fit(name, fold, cfg, tau, cache)
                    risk = final.predict(fold.X_test)
                    scored = _score(fold, final, risk, tau, times, grid_error)
                    fit_note = "; ".join(settings["fit_warnings"])
                except Exception as error:  # noqa: BLE001 - one failed model must not stop the benchmark
                    reason = f"fit failed: {type(error).__name__}: {error}"
                    errors.append(f"fold {fold.fold} {name}: {reason}")
                    tqdm.write(f"fold {fold.fold} {name}: {reason}\n{traceback.format_exc()}")
                    settings = {"error": reason}
                    scored = {metric: (np.nan, reason) for metric in metrics.METRICS}
                    fit_note, risk = "", None
                fold_settings[fold.fold]["models"][name] = settings
                for metric, (value, note) in scored.items():
                    rows.append((fold.fold, name, metric, value, "; ".join(filter(None, [note, fit_note]))))
                if risk is not None:
                    predictions.append(
                        pd.DataFrame(
                            {
                                "fold": fold.fold,
                                "model": name,
                                "case_id": fold.ids_test,
                                "risk": risk,
                                "os_time": fold.y_test["time"],
                                "os_event": fold.y_test["event"].astype(int),
                            }
                        )
                    )
                bar.update()
    columns = ["fold", "model", "case_id", "risk", "os_time", "os_event"]
    return BenchmarkResult(
        pd.DataFrame(rows, columns=["fold", "model", "metric", "value", "note"]),
        pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame(columns=columns),
        fold_settings,
        errors,
    )
