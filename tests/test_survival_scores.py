"""Survival scores stay possible: Cox survival curves are probabilities, and an impossible score is N/A.

Issue 13, bug 10: CoxPH on the demo's ABMIL vectors reported an integrated
Brier score of 95.129 ± 212.264. A nearly separable Cox fit gives risk scores
spanning dozens of orders of magnitude, scikit-survival's Breslow baseline
loses its risk-set sums to cancellation and the predicted survival exceeds 1.
"""

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import StandardScaler
from sksurv.functions import StepFunction
from sksurv.linear_model import CoxnetSurvivalAnalysis, CoxPHSurvivalAnalysis
from sksurv.util import Surv

from radiopath.survival import benchmark, metrics
from radiopath.survival.benchmark import format_summary, run_benchmark, summarise
from radiopath.survival.data import folds_from_table
from radiopath.survival.models import make_estimator

COXPH = {"ties": "breslow", "n_iter": 100}
COXNET = {"l1_ratio": 0.5, "alpha_min_ratio": 0.01, "n_alphas": 100, "max_iter": 100000}


def separable(n=50, d=16, seed=51):
    """Times ordered by a linear predictor up to little noise: a small ridge penalty lets the fit run away."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    time = np.exp(-(X @ rng.normal(size=d)) + rng.normal(0, 0.3, n)) * 100 + 1
    return X, Surv.from_arrays(event=rng.random(n) < 0.8, time=time)


def ordinary(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    time = rng.exponential(100 * np.exp(-0.8 * X[:, 0] + 0.4 * X[:, 1])) + 1
    return X, Surv.from_arrays(event=rng.random(n) < 0.7, time=time)


def breslow_reference(eta_train, y_train, eta_test, times):
    """Breslow survival with each risk-set sum taken directly (its own log-sum-exp), no running total."""
    unique = np.unique(y_train["time"])
    hazard_steps = np.zeros((len(eta_test), len(unique)))
    for k, t in enumerate(unique):
        deaths = np.sum(y_train["event"] & (y_train["time"] == t))
        if deaths:
            at_risk = eta_train[y_train["time"] >= t]
            log_sum = at_risk.max() + np.log(np.exp(at_risk - at_risk.max()).sum())
            with np.errstate(over="ignore"):
                hazard_steps[:, k] = np.exp(np.log(deaths) + eta_test - log_sum)
    survival = np.exp(-np.cumsum(hazard_steps, axis=1))
    return survival[:, np.searchsorted(unique, times, side="right") - 1]


def fitted(name, params, X_train, y_train, **settings):
    scaler = StandardScaler().fit(X_train)
    model = make_estimator(name, params, seed=0).set_params(**settings).fit(scaler.transform(X_train), y_train)
    return scaler, model


def test_cox_survival_stays_a_probability_when_risk_scores_span_many_orders():
    X, y = separable()
    train, test = np.arange(40), np.arange(40, 50)
    scaler, model = fitted("CoxPH", COXPH, X[train], y[train], alpha=0.01)
    eta_train = model.predict(scaler.transform(X[train]))
    assert np.ptp(eta_train) > 40  # risk scores beyond double precision's relative reach of each other
    times = np.linspace(y["time"][test].min(), np.nextafter(y["time"][train].max(), 0), 25)
    survival = np.vstack([fn(times) for fn in model.predict_survival_function(scaler.transform(X[test]))])
    assert ((survival >= 0) & (survival <= 1)).all()
    assert (np.diff(survival, axis=1) <= 0).all()
    expected = breslow_reference(eta_train, y[train], model.predict(scaler.transform(X[test])), times)
    np.testing.assert_allclose(survival, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "name, params, settings, reference",
    [
        ("CoxPH", COXPH, {"alpha": 1.0}, CoxPHSurvivalAnalysis(alpha=1.0, ties="breslow", n_iter=100)),
        ("Coxnet", COXNET, {"alphas": [0.05]},
         CoxnetSurvivalAnalysis(l1_ratio=0.5, alphas=[0.05], max_iter=100000, fit_baseline_model=True)),
    ],
)
def test_cox_survival_is_scikit_survivals_on_ordinary_data(name, params, settings, reference):
    X, y = ordinary()
    train, test = np.arange(90), np.arange(90, 120)
    scaler, model = fitted(name, params, X[train], y[train], **settings)
    reference.fit(scaler.transform(X[train]), y[train])
    Z = scaler.transform(X[test])
    # scikit-survival's running total drifts by ~1e-10 relative in the last, smallest risk sets
    np.testing.assert_allclose(
        model.predict_survival_function(Z, return_array=True),
        reference.predict_survival_function(Z, return_array=True),
        rtol=1e-9,
    )
    np.testing.assert_allclose(
        model.predict_cumulative_hazard_function(Z, return_array=True),
        reference.predict_cumulative_hazard_function(Z, return_array=True),
        rtol=1e-9,
    )
    times = np.quantile(y["time"][train], [0.2, 0.5, 0.8])
    steps = model.predict_survival_function(Z)
    assert all(isinstance(fn, StepFunction) for fn in steps)
    expected = breslow_reference(model.predict(scaler.transform(X[train])), y[train], model.predict(Z), times)
    np.testing.assert_allclose([fn(times) for fn in steps], expected, rtol=1e-12)


def as_table(X, y):
    """A feature table as the survival stage reads it: case_id index, os_time, os_event, v0..vD."""
    table = pd.DataFrame(X, columns=[f"v{i}" for i in range(X.shape[1])], index=[f"c{i:03d}" for i in range(len(X))])
    return table.assign(os_time=y["time"], os_event=y["event"].astype(int))


def benchmark_config(compose_config, models):
    return compose_config(
        "survival",
        [
            f"models=[{','.join(models)}]",
            "selection.univariate_cox=false",
            "tuning.inner_folds=3",
            "tuning.n_jobs=1",
            "estimators.CoxPH.alpha=[0.01]",
            "estimators.Coxnet.grid_size=3",
        ],
    )


def table_folds(table):
    return folds_from_table(table, pd.Series(np.arange(len(table)) % 5, index=table.index, name="fold"))


def test_benchmark_gives_every_cox_fold_a_brier_score_in_the_unit_interval(compose_config):
    # scikit-survival's own baseline gives CoxPH infinite survival probabilities on 3 of these 5 folds
    table = as_table(*separable(n=80, d=16, seed=51))
    result = run_benchmark(table_folds(table), benchmark_config(compose_config, ["CoxPH", "Coxnet"]))
    scores = result.metrics[result.metrics["metric"] == "ibs"]
    assert len(scores) == 10
    assert scores["value"].between(0, 1).all(), scores.to_string()
    assert (scores["note"] == "").all()


class OverconfidentCoxPH(CoxPHSurvivalAnalysis):
    """A broken survival estimate: curves scaled tenfold, as a cancelled baseline hazard can give."""

    def predict_survival_function(self, X, return_array=False):
        return [StepFunction(fn.x, fn.y, a=10.0) for fn in super().predict_survival_function(X)]


def test_impossible_scores_are_refused_with_a_note_and_never_averaged(compose_config, monkeypatch):
    monkeypatch.setattr(benchmark, "make_estimator", lambda name, params, seed: OverconfidentCoxPH(**COXPH))
    monkeypatch.setattr(metrics, "uno_c", lambda *args: 1.7)
    cfg = benchmark_config(compose_config, ["CoxPH"])
    result = run_benchmark(table_folds(as_table(*ordinary())), cfg)
    table = result.metrics.set_index(["metric", "fold"])
    assert table.loc["ibs", "value"].isna().all()
    assert table.loc["ibs", "note"].str.contains("predicted survival outside \\[0, 1\\]").all()
    assert table.loc["c_ipcw", "value"].isna().all()
    assert table.loc["c_ipcw", "note"].str.contains("refused: c_ipcw = 1.7 is outside \\[0, 1\\]").all()
    assert table.loc["c_index", "value"].between(0, 1).all()

    summary = summarise(result.metrics).set_index("metric")
    assert summary.loc["ibs", ["n_folds", "n_na"]].tolist() == [0, 5]
    assert np.isnan(summary.loc["ibs", "mean"])
    assert summary.loc["c_index", ["n_folds", "n_na"]].tolist() == [5, 0]


@pytest.mark.parametrize("value", [95.129, -0.01, 1.0000001, np.inf])
@pytest.mark.parametrize("name", metrics.METRICS)
def test_every_metric_refuses_a_value_outside_the_unit_interval(name, value):
    refused, note = metrics.refuse_impossible(name, value)
    assert np.isnan(refused) and note.startswith(f"refused: {name} = ")


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_a_possible_value_passes_unchanged(value):
    assert metrics.refuse_impossible("ibs", value) == (value, "")


def test_summary_counts_na_folds_and_averages_only_the_others():
    table = pd.DataFrame(
        {
            "fold": [0, 1, 2, 3, 4] * 2,
            "model": ["CoxPH"] * 10,
            "metric": ["ibs"] * 5 + ["c_index"] * 5,
            "value": [0.2, 0.3, np.nan, 0.25, 0.15, 0.6, 0.7, 0.65, 0.55, 0.5],
            "note": ["", "", "refused: ibs = 95.1 is outside [0, 1]", "", ""] + [""] * 5,
        }
    )
    summary = summarise(table).set_index("metric")
    assert summary.loc["ibs", "mean"] == pytest.approx(0.225)
    assert summary.loc["ibs", ["n_folds", "n_na"]].tolist() == [4, 1]
    assert summary.loc["c_index", ["n_folds", "n_na"]].tolist() == [5, 0]
    text = format_summary(summary.reset_index())
    assert "0.225 ± 0.065 (4 of 5)" in text and "0.600 ± 0.079 (5)" in text
