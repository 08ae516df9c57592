"""Tuning inside the training fold: the test fold never chooses anything, the choice is recorded."""

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY_MODEL
from radiopath.training import stage
from radiopath.training.cohort import Patient
from radiopath.training.scaling import NodeScaler
from radiopath.training.stage import run_training
from radiopath.training.tuning import search

from test_training import toy_cohort, train_config

TINY = ["model=sparra", "modalities=[pathology]", *TINY_MODEL, "training.epochs=2", "folds.n_folds=2"]
GRID = "tune.grid={training.lr:[1e-3,3e-3],model.kwargs.ratio:[0.2,0.5]}"
TUNED = ["tune.enabled=true", "tune.inner_folds=2", GRID]


def ids(patients) -> set[str]:
    return {p.case_id for p in patients}


def test_tuning_never_sees_the_test_fold(compose_config, tmp_path, monkeypatch):
    manifest = toy_cohort(tmp_path, n=20)
    cfg = train_config(compose_config, tmp_path, manifest, *TINY, *TUNED)
    state = {"fold": None, "tuning": False}
    seen = []  # (fold, tuning?, what, case ids)

    def log(what, patients):
        seen.append((state["fold"], state["tuning"], what, ids(patients)))

    real_train_fold, real_tune_fold = stage.train_fold, stage.tune_fold
    real_fit, real_predict, real_scaler_fit = stage.fit, stage.predict, NodeScaler.fit

    def train_fold(cfg, cohort, folds, k, device):
        state["fold"] = k
        return real_train_fold(cfg, cohort, folds, k, device)

    def tune_fold(*args, **kwargs):
        state["tuning"] = True
        try:
            return real_tune_fold(*args, **kwargs)
        finally:
            state["tuning"] = False

    def fit(model, patients, watch, *args, **kwargs):
        log("fit", patients)
        log("watch", watch)
        return real_fit(model, patients, watch, *args, **kwargs)

    def predict(model, patients, *args, **kwargs):
        log("predict", patients)
        return real_predict(model, patients, *args, **kwargs)

    def scaler_fit(self, patients):
        log("scaler", patients)
        return real_scaler_fit(self, patients)

    monkeypatch.setattr(stage, "train_fold", train_fold)
    monkeypatch.setattr(stage, "tune_fold", tune_fold)
    monkeypatch.setattr(stage, "fit", fit)
    monkeypatch.setattr(stage, "predict", predict)
    monkeypatch.setattr(NodeScaler, "fit", scaler_fit)
    assert run_training(cfg).ok

    folds = pd.read_csv(tmp_path / "run" / "folds.csv")
    for k in range(2):
        test_ids = set(folds.loc[folds["fold"] == k, "case_id"])
        train_ids = set(folds.loc[folds["fold"] != k, "case_id"])
        tuning = [(what, cases) for fold, tuned, what, cases in seen if fold == k and tuned]
        assert [what for what, _ in tuning].count("fit") == 4 * 2  # grid points x inner folds
        assert all(not cases & test_ids for _, cases in tuning), f"fold {k}: a test patient reached tuning"
        assert set().union(*(cases for _, cases in tuning)) == train_ids
        for (what, scaled), (fit_, fitted), (_, watched), (_, scored) in zip(*[iter(tuning)] * 4):
            # per inner fold: scaler and model on inner-train, scored on the disjoint inner validation
            assert (what, fit_) == ("scaler", "fit") and scaled == fitted and scored == watched
            assert fitted | scored == train_ids and not fitted & scored
        final = [(what, cases) for fold, tuned, what, cases in seen if fold == k and not tuned]
        assert final[:3] == [("scaler", train_ids), ("fit", train_ids), ("watch", test_ids)]


def test_chosen_values_are_recorded_and_trained_with(compose_config, tmp_path):
    manifest = toy_cohort(tmp_path, n=20)
    assert run_training(train_config(compose_config, tmp_path, manifest, *TINY, *TUNED)).ok
    table = pd.read_csv(tmp_path / "run" / "fold0" / "tuning.csv")
    assert list(table.columns) == ["point", "training.lr", "model.kwargs.ratio", "inner0", "inner1", "mean", "chosen"]
    assert table[["training.lr", "model.kwargs.ratio"]].values.tolist() == [[1e-3, 0.2], [1e-3, 0.5],
                                                                            [3e-3, 0.2], [3e-3, 0.5]]
    assert table["chosen"].sum() == 1
    best = table.loc[table["chosen"]].iloc[0]
    assert best["point"] == table["mean"].idxmax()  # the first of equal maxima
    chosen = {"training.lr": best["training.lr"], "model.kwargs.ratio": best["model.kwargs.ratio"]}
    saved = torch.load(tmp_path / "run" / "fold0" / "model.pt", weights_only=True)
    assert saved["tuned"] == chosen and saved["model_kwargs"]["ratio"] == chosen["model.kwargs.ratio"]

    # The exported model is an ordinary run of the fold with the chosen values set.
    direct = train_config(compose_config, tmp_path, manifest, *TINY, "fold=0", f"output_dir={tmp_path / 'direct'}",
                          *(f"{key}={value}" for key, value in chosen.items()))
    assert run_training(direct).ok
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "run" / "fold0" / "vectors.csv"),
                                  pd.read_csv(tmp_path / "direct" / "fold0" / "vectors.csv"), check_exact=True)


def test_node_features_can_be_tuned_inside_the_fold(compose_config, tmp_path):
    manifest = toy_cohort(tmp_path, n=20)
    cfg = train_config(compose_config, tmp_path, manifest, *TINY, "fold=0", "tune.enabled=true", "tune.inner_folds=2",
                       "tune.grid={node_features.components:[null,2]}", "node_features.center=graph")
    assert run_training(cfg).ok
    table = pd.read_csv(tmp_path / "run" / "fold0" / "tuning.csv")
    assert table["node_features.components"].isna().tolist() == [True, False]
    saved = torch.load(tmp_path / "run" / "fold0" / "model.pt", weights_only=True)
    chosen = saved["tuned"]["node_features.components"]
    assert saved["scaler"]["components"] == chosen
    assert saved["in_dims"]["pathology"] == (2 if chosen == 2 else saved["scaler"]["mean"]["pathology"].numel())


@pytest.mark.parametrize("grid, bad", [
    ("{training.learning_rate:[1e-3]}", "training.learning_rate"),
    ("{model.kwargs.ratio:[0.2,0.5]}", "model.kwargs.ratio"),  # abmil has no top-k ratio
    ("{seed:[0,1]}", "seed"),
])
def test_a_bad_grid_key_fails_at_start_naming_it(compose_config, tmp_path, grid, bad):
    manifest = toy_cohort(tmp_path, n=10)
    cfg = train_config(compose_config, tmp_path, manifest, "model=abmil", "tune.enabled=true", f"tune.grid={grid}")
    with pytest.raises(ValueError, match=f"'{bad}'"):
        run_training(cfg)
    assert not (tmp_path / "run").exists()


def test_search_takes_the_best_mean_and_the_first_of_ties():
    patients = [Patient(f"p{i}", float(i + 1), i % 2, {}) for i in range(12)]
    grid = {"training.lr": [1e-3, 3e-3, 1e-2], "training.epochs": [5, 10]}
    flat = search(grid, patients, lambda values, train, validation: 0.6, inner_folds=3, seed=0)
    assert flat.chosen == {"training.lr": 1e-3, "training.epochs": 5} and flat.table["chosen"].tolist()[0]

    def score(values, train, validation):  # the second inner fold undefined: left out of the mean
        return np.nan if "p0" in ids(validation) else values["training.epochs"] * (values["training.lr"] != 1e-2)

    best = search(grid, patients, score, inner_folds=3, seed=0)
    assert best.chosen == {"training.lr": 1e-3, "training.epochs": 10}
    assert best.table["mean"].tolist() == [5, 10, 5, 10, 0, 0] and best.table["chosen"].sum() == 1
