"""The stage on clinical cohorts shipped with scikit-survival, checked against direct scikit-survival calls."""

import json

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sksurv.datasets import load_gbsg2, load_whas500
from sksurv.linear_model import CoxnetSurvivalAnalysis, CoxPHSurvivalAnalysis
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv

from radiopath.survival.benchmark import format_summary
from radiopath.survival.stage import run_survival


def write_table(X, y, n_rows, path, seed=0):
    """One-hot encode the categoricals and write a feature table of ``n_rows`` random patients."""
    event_field, time_field = y.dtype.names
    table = pd.get_dummies(X, drop_first=True, dtype=float)
    table.insert(0, "os_event", y[event_field].astype(int))
    table.insert(0, "os_time", y[time_field])
    table.insert(0, "case_id", [f"p{i:03d}" for i in range(len(table))])
    table = table.sample(n=n_rows, random_state=seed).reset_index(drop=True)
    table.to_csv(path, index=False)
    return table


def fold_parts(table, folds, k):
    features = table.drop(columns=["case_id", "os_time", "os_event"])
    test = (folds == k).to_numpy()
    y = Surv.from_arrays(event=table["os_event"].astype(bool), time=table["os_time"])
    return features[~test], features[test], y[~test], y[test]


def stage_metric(metrics, fold, model, metric):
    row = metrics[(metrics["fold"] == fold) & (metrics["model"] == model) & (metrics["metric"] == metric)]
    return float(row["value"].iloc[0])


def test_gbsg2_matches_direct_scikit_survival(compose_config, tmp_path, capsys):
    X, y = load_gbsg2()
    table = write_table(X, y, 300, tmp_path / "gbsg2.csv")
    alphas = [0.1, 10.0, 1000.0]
    cfg = compose_config(
        "survival",
        [
            f"features={tmp_path / 'gbsg2.csv'}",
            "models=[CoxPH,Coxnet]",
            "selection.univariate_cox=false",
            "tuning.inner_folds=3",
            f"estimators.CoxPH.alpha=[{','.join(map(str, alphas))}]",
            "estimators.Coxnet.grid_size=4",
            "metrics.time_grid_size=10",
        ],
    )
    result, summary, out = run_survival(cfg)
    with capsys.disabled():
        print("\nGBSG2 (300 patients, 5 folds)\n" + format_summary(summary))
    assert result.errors == []

    settings = json.loads((out / "settings.json").read_text())
    folds = pd.read_csv(out / "folds.csv").set_index("case_id").loc[table["case_id"], "fold"]
    events_per_fold = table.groupby(folds.to_numpy())["os_event"].sum()
    assert events_per_fold.max() - events_per_fold.min() <= 1  # stratified on the event

    metrics = result.metrics
    for k in range(5):
        X_train, X_test, y_train, y_test = fold_parts(table, folds, k)
        fold = settings["folds"][str(k)]
        tau = np.quantile(y_train["time"], 0.8)
        times = np.array(fold["time_grid"])
        assert fold["tau"] == pytest.approx(tau)
        assert fold["models"]["CoxPH"]["selected_features"] == list(X_train.columns)

        # the chosen alpha is what GridSearchCV picks on the same inner splits
        inner = StratifiedKFold(3, shuffle=True, random_state=0).split(X_train, y_train["event"])
        search = GridSearchCV(
            make_pipeline(StandardScaler(), CoxPHSurvivalAnalysis(ties="breslow")),
            {"coxphsurvivalanalysis__alpha": alphas},
            cv=list(inner),
        ).fit(X_train, y_train)
        chosen = fold["models"]["CoxPH"]["chosen"]["model__alpha"]
        assert search.best_params_["coxphsurvivalanalysis__alpha"] == chosen

        coxph = make_pipeline(StandardScaler(), CoxPHSurvivalAnalysis(alpha=chosen)).fit(X_train, y_train)
        risk = coxph.predict(X_test)
        survival = np.vstack([fn(times) for fn in coxph.predict_survival_function(X_test)])
        expected = {
            "c_index": concordance_index_censored(y_test["event"], y_test["time"], risk)[0],
            "c_ipcw": concordance_index_ipcw(y_train, y_test, risk, tau=tau)[0],
            "cd_auc": cumulative_dynamic_auc(y_train, y_test, risk, times)[1],
            "ibs": integrated_brier_score(y_train, y_test, survival, times),
        }
        for metric, value in expected.items():
            assert stage_metric(metrics, k, "CoxPH", metric) == pytest.approx(value, rel=1e-9), (k, metric)

        alpha = fold["models"]["Coxnet"]["chosen"]["model__alphas"]
        assert alpha in fold["models"]["Coxnet"]["grid"]["model__alphas"]
        coxnet = CoxnetSurvivalAnalysis(l1_ratio=0.5, alphas=alpha, fit_baseline_model=True, max_iter=100000)
        coxnet = make_pipeline(StandardScaler(), coxnet).fit(X_train, y_train)
        survival = np.vstack([fn(times) for fn in coxnet.predict_survival_function(X_test)])
        assert stage_metric(metrics, k, "Coxnet", "ibs") == pytest.approx(
            integrated_brier_score(y_train, y_test, survival, times), rel=1e-9
        )
        assert stage_metric(metrics, k, "Coxnet", "c_index") == pytest.approx(
            concordance_index_censored(y_test["event"], y_test["time"], coxnet.predict(X_test))[0], rel=1e-9
        )
    # the known prognostic factors of GBSG2 rank patients well above chance
    assert summary.set_index(["model", "metric"]).loc[("CoxPH", "c_index"), "mean"] > 0.6


def test_whas500_univariate_selection_matches_lifelines(compose_config, tmp_path, capsys):
    X, y = load_whas500()
    table = write_table(X, y, 250, tmp_path / "whas500.csv")
    cfg = compose_config(
        "survival",
        [
            f"features={tmp_path / 'whas500.csv'}",
            "models=[CoxPH]",
            "selection.max_mode_fraction=1.0",  # only constant columns go: the Cox filter does the rest
            "tuning.inner_folds=3",
            "tuning.score=cipcw",
            "estimators.CoxPH.alpha=[0.1,10.0]",
            "metrics.time_grid_size=10",
        ],
    )
    result, summary, out = run_survival(cfg)
    with capsys.disabled():
        print("\nWHAS500 (250 patients, 5 folds, univariate Cox p < 0.2)\n" + format_summary(summary))
    assert result.errors == []

    settings = json.loads((out / "settings.json").read_text())
    folds = pd.read_csv(out / "folds.csv").set_index("case_id").loc[table["case_id"], "fold"]
    for k in range(5):
        X_train, X_test, y_train, y_test = fold_parts(table, folds, k)
        fold = settings["folds"][str(k)]
        p_values = {
            name: CoxPHFitter()
            .fit(pd.DataFrame({name: X_train[name], "T": y_train["time"], "E": y_train["event"]}), "T", "E")
            .summary.loc[name, "p"]
            for name in X_train.columns
        }
        selected = [name for name, p in p_values.items() if p < 0.2]
        assert fold["models"]["CoxPH"]["selected_features"] == selected

        alpha = fold["models"]["CoxPH"]["chosen"]["model__alpha"]
        coxph = make_pipeline(StandardScaler(), CoxPHSurvivalAnalysis(alpha=alpha)).fit(X_train[selected], y_train)
        risk = coxph.predict(X_test[selected])
        assert stage_metric(result.metrics, k, "CoxPH", "c_index") == pytest.approx(
            concordance_index_censored(y_test["event"], y_test["time"], risk)[0], rel=1e-9
        )
        assert stage_metric(result.metrics, k, "CoxPH", "c_ipcw") == pytest.approx(
            concordance_index_ipcw(y_train, y_test, risk, tau=fold["tau"])[0], rel=1e-9
        )
    assert summary.set_index(["model", "metric"]).loc[("CoxPH", "c_index"), "mean"] > 0.65
    # a test fold reaching past the last training time still gets its C/D AUC and IBS
    assert (summary["n_folds"] == 5).all(), result.metrics[result.metrics["value"].isna()]
