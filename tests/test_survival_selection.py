"""Feature filters: what they keep, that p-values are lifelines', and that they see training rows only."""

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from sksurv.util import Surv

from radiopath.survival.selection import NearConstantFilter, UnivariateCoxSelector
from radiopath.survival.stage import run_survival


def survival_data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["signal", "noise1", "noise2", "noise3"])
    time = rng.exponential(100 * np.exp(-1.5 * X["signal"].to_numpy())) + 1
    event = rng.random(n) < 0.75
    return X, Surv.from_arrays(event=event, time=time)


def write_uid_table(path, seed):
    """A 60-patient feature table whose first column, ``uid``, names the rows a spied fit sees."""
    X, y = survival_data(n=60, seed=seed)
    X.insert(0, "uid", np.arange(len(X)) + 0.5)
    table = X.assign(case_id=[f"p{i}" for i in range(len(X))], os_time=y["time"], os_event=y["event"].astype(int))
    table.to_csv(path, index=False)
    return table


def test_near_constant_filter_drops_constant_and_rare_columns():
    X, _ = survival_data()
    X["constant"] = 3.0
    X["rare"] = 0.0
    X.loc[0, "rare"] = 1.0  # one row in 120: above the 0.98 mode fraction
    X["binary"] = np.arange(len(X)) % 2
    kept = NearConstantFilter(max_mode_fraction=0.98).fit(X)
    assert list(kept.get_feature_names_out()) == ["signal", "noise1", "noise2", "noise3", "binary"]
    assert kept.transform(X).shape == (len(X), 5)


def test_univariate_cox_p_values_are_lifelines():
    X, y = survival_data()
    selector = UnivariateCoxSelector(p_threshold=0.2).fit(X, y)
    for j, name in enumerate(X.columns):
        frame = pd.DataFrame({name: X[name], "T": y["time"], "E": y["event"]})
        expected = CoxPHFitter().fit(frame, "T", "E").summary.loc[name, "p"]
        assert selector.p_values_[j] == pytest.approx(expected, rel=1e-6)
    kept = selector.get_feature_names_out()
    assert "signal" in kept
    assert set(kept) == set(X.columns[selector.p_values_ < 0.2])


def test_univariate_cox_keeps_the_best_feature_when_none_passes():
    X, y = survival_data()
    selector = UnivariateCoxSelector(p_threshold=1e-300).fit(X[["noise1", "noise2"]], y)
    assert selector.fallback_
    assert list(selector.get_feature_names_out()) == [["noise1", "noise2"][int(np.argmin(selector.p_values_))]]


def test_selector_only_ever_sees_training_rows(compose_config, tmp_path, monkeypatch):
    table = write_uid_table(tmp_path / "table.csv", seed=1)

    seen = []
    original_fit = UnivariateCoxSelector.fit

    def spy_fit(self, X, y):
        seen.append(set(np.asarray(X)[:, 0]))
        return original_fit(self, X, y)

    monkeypatch.setattr(UnivariateCoxSelector, "fit", spy_fit)
    cfg = compose_config(
        "survival",
        [
            f"features={tmp_path / 'table.csv'}",
            "models=[CoxPH]",
            "tuning.inner_folds=3",
            "tuning.n_jobs=1",  # the spy counts fits in this process only
            "estimators.CoxPH.alpha=[1.0]",
        ],
    )
    run_survival(cfg)

    folds = pd.read_csv(tmp_path / "survival" / "folds.csv")
    uid = dict(zip(table["case_id"], table["uid"]))
    train_sets = [{uid[c] for c in folds["case_id"][folds["fold"] != k]} for k in range(5)]
    assert seen
    for rows in seen:
        # fitted on one outer fold's training rows (or an inner split of them), never on its test rows
        assert any(rows <= train for train in train_sets)
    outer_sizes = {len(train) for train in train_sets}
    assert any(len(rows) not in outer_sizes for rows in seen)  # inner CV refits it too


def test_filters_are_fitted_once_per_split_for_all_grids_and_models(compose_config, tmp_path, monkeypatch):
    write_uid_table(tmp_path / "table.csv", seed=2)

    seen = {NearConstantFilter: [], UnivariateCoxSelector: []}
    for cls, rows in seen.items():
        def spy_fit(self, X, y=None, _original=cls.fit, _rows=rows):
            _rows.append(frozenset(np.asarray(X)[:, 0]))
            return _original(self, X, y)

        monkeypatch.setattr(cls, "fit", spy_fit)
    cfg = compose_config(
        "survival",
        [
            f"features={tmp_path / 'table.csv'}",
            "n_folds=2",
            "tuning.inner_folds=2",
            "tuning.n_jobs=1",  # the spy counts fits in this process only
            "estimators.RSF.n_estimators=10",
            "estimators.RSF.max_depth=[2,4]",
            "estimators.CoxPH.alpha=[0.1,10.0]",
            "estimators.Coxnet.grid_size=3",
            "estimators.FSVM.alpha=[0.01,1.0]",
        ],
    )
    result, _, _ = run_survival(cfg)
    assert not result.errors
    for rows in seen.values():
        # 2 outer folds x (2 inner training splits + the fold's training part): every grid
        # candidate of every model reuses these fits instead of refitting the filters
        assert len(rows) == 2 * (2 + 1)
        assert len(set(rows)) == len(rows)
