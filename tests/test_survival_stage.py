"""The survival stage on a fabricated training run: outputs, degenerate folds, FSVM's N/A IBS."""

import json

import numpy as np
import pandas as pd
import pytest

from radiopath.survival.stage import run_survival

# Small grids and few trees: the point is the plumbing, not the numbers.
FAST = [
    "tuning.inner_folds=3",
    "estimators.RSF.n_estimators=10",
    "estimators.RSF.max_depth=[2,4]",
    "estimators.CoxPH.alpha=[0.1,10.0]",
    "estimators.Coxnet.grid_size=3",
    "estimators.FSVM.alpha=[0.01,1.0]",
    "metrics.time_grid_size=8",
]


def fabricate_run(run_dir, n_patients=80, n_vectors=5, seed=0, censored_fold=None):
    """A training-run folder (folds.csv, fold{k}/vectors.csv) plus its manifest.

    Hazard grows with v0 (planted signal); the other vectors are noise, and each
    fold's vectors carry a little fold-specific noise as if from a different model.
    With ``censored_fold=k`` every test patient of fold k is censored.
    """
    rng = np.random.default_rng(seed)
    case_ids = [f"case{i:03d}" for i in range(n_patients)]
    signal = rng.normal(size=n_patients)
    time = rng.exponential(1000 * np.exp(-2.0 * signal)) + 1
    # random censoring, then the end of follow-up at 3000 days
    event = (rng.random(n_patients) < 0.8) & (time < 3000)
    time = np.minimum(time, 3000)
    fold = np.arange(n_patients) % 5
    if censored_fold is not None:
        event[fold == censored_fold] = False
    manifest = run_dir / "manifest.csv"
    run_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"case_id": case_ids, "os_time": time.round(1), "os_event": event.astype(int)}).to_csv(
        manifest, index=False
    )
    pd.DataFrame({"case_id": case_ids, "fold": fold}).to_csv(run_dir / "folds.csv", index=False)
    for k in range(5):
        vectors = rng.normal(size=(n_patients, n_vectors))
        vectors[:, 0] = signal + 0.3 * rng.normal(size=n_patients)
        table = pd.DataFrame(vectors, columns=[f"v{i}" for i in range(n_vectors)])
        table.insert(0, "risk", np.nan)  # the untrained Mean aggregator has no risk head
        table.insert(0, "split", np.where(fold == k, "test", "train"))
        table.insert(0, "case_id", case_ids)
        (run_dir / f"fold{k}").mkdir(exist_ok=True)
        table.to_csv(run_dir / f"fold{k}" / "vectors.csv", index=False)
    return manifest


@pytest.fixture
def run_config(compose_config, tmp_path):
    def _config(overrides=(), **fabricate):
        manifest = fabricate_run(tmp_path / "run", **fabricate)
        return compose_config(
            "survival", [f"run_dir={tmp_path / 'run'}", f"data.manifest={manifest}", *FAST, *overrides]
        )

    return _config


@pytest.fixture(scope="module")
def censored_fold_run(compose_config, tmp_path_factory):
    """One stage run on a fabricated run whose fold 2 has no test events (shared by the tests below)."""
    run_dir = tmp_path_factory.mktemp("survival") / "run"
    manifest = fabricate_run(run_dir, censored_fold=2)
    cfg = compose_config("survival", [f"run_dir={run_dir}", f"data.manifest={manifest}", *FAST])
    result, summary, output_dir = run_survival(cfg)
    return run_dir, output_dir, result, summary


def test_outputs_have_the_documented_columns(censored_fold_run):
    run_dir, out, result, _ = censored_fold_run
    assert out == run_dir / "survival"
    assert list(pd.read_csv(out / "metrics.csv").columns) == ["fold", "model", "metric", "value", "note"]
    assert list(pd.read_csv(out / "summary.csv").columns) == ["model", "metric", "mean", "std", "n_folds", "n_na"]
    predictions = pd.read_csv(out / "predictions.csv", dtype={"case_id": str})
    assert list(predictions.columns) == ["fold", "model", "case_id", "risk", "os_time", "os_event"]
    logrank = pd.read_csv(out / "logrank.csv")
    assert {"model", "threshold", "n_low", "n_high", "p_value"} <= set(logrank.columns)
    for model in ("RSF", "CoxPH", "Coxnet", "FSVM"):
        assert (out / f"km_{model}.png").stat().st_size > 10_000
    # every patient is predicted exactly once per model, by the fold that holds it out
    folds = pd.read_csv(run_dir / "folds.csv", dtype={"case_id": str}).set_index("case_id")["fold"]
    for _, part in predictions.groupby("model"):
        assert sorted(part["case_id"]) == sorted(folds.index)
        assert (part["fold"].to_numpy() == folds.loc[part["case_id"]].to_numpy()).all()
    assert result.errors == []


def test_planted_signal_is_found(censored_fold_run):
    _, out, _, summary = censored_fold_run
    c_index = summary.set_index(["model", "metric"])["mean"]
    assert c_index["CoxPH", "c_index"] > 0.7
    assert c_index["RSF", "c_index"] > 0.6
    settings = json.loads((out / "settings.json").read_text())
    for fold in settings["folds"].values():
        assert "v0" in fold["models"]["CoxPH"]["selected_features"]
    logrank = pd.read_csv(out / "logrank.csv").set_index("model")
    assert logrank.loc["CoxPH", "p_value"] < 0.01


def test_all_censored_test_fold_is_reported_not_skipped(censored_fold_run):
    _, out, _, _ = censored_fold_run
    metrics = pd.read_csv(out / "metrics.csv", keep_default_na=False, na_values=[""])
    fold2 = metrics[metrics["fold"] == 2]
    assert len(fold2) == 4 * 4  # every model and metric has its row
    assert fold2["value"].isna().all()
    assert fold2["note"].str.contains("no events in the test fold").all()
    summary = pd.read_csv(out / "summary.csv").set_index(["model", "metric"])
    assert summary.loc[("CoxPH", "c_index"), "n_folds"] == 4
    other = metrics[(metrics["fold"] != 2) & (metrics["model"] == "CoxPH") & (metrics["metric"] == "c_index")]
    assert summary.loc[("CoxPH", "c_index"), "mean"] == pytest.approx(other["value"].mean())
    # the fold's patients are still predicted
    predictions = pd.read_csv(out / "predictions.csv")
    assert (predictions["fold"] == 2).sum() == 4 * 16


def test_fsvm_ibs_is_not_available_and_never_averaged(censored_fold_run):
    _, out, _, _ = censored_fold_run
    metrics = pd.read_csv(out / "metrics.csv")
    ibs = metrics[(metrics["model"] == "FSVM") & (metrics["metric"] == "ibs")]
    assert len(ibs) == 5 and ibs["value"].isna().all()
    assert ibs[ibs["fold"] != 2]["note"].str.contains("gives no survival function").all()
    summary = pd.read_csv(out / "summary.csv").set_index(["model", "metric"])
    assert np.isnan(summary.loc[("FSVM", "ibs"), "mean"]) and summary.loc[("FSVM", "ibs"), "n_folds"] == 0
    # the other models do have an IBS, in (0, 1)
    for model in ("RSF", "CoxPH", "Coxnet"):
        assert 0 < summary.loc[(model, "ibs"), "mean"] < 0.5


def test_tau_and_time_grid_come_from_the_fold(censored_fold_run):
    run_dir, out, _, _ = censored_fold_run
    settings = json.loads((out / "settings.json").read_text())
    manifest = pd.read_csv(run_dir / "manifest.csv", dtype={"case_id": str}).set_index("case_id")
    folds = pd.read_csv(run_dir / "folds.csv", dtype={"case_id": str}).set_index("case_id")["fold"]
    metrics = pd.read_csv(out / "metrics.csv", keep_default_na=False)
    for k in (0, 1, 3):
        fold = settings["folds"][str(k)]
        train_times = manifest.loc[folds.index[folds != k], "os_time"]
        assert fold["tau"] == pytest.approx(np.quantile(train_times, 0.8))
        notes = metrics[(metrics["fold"] == k) & (metrics["metric"] == "c_ipcw")]["note"]
        assert notes.str.contains(f"tau={fold['tau']:.6g}").all()
        grid = np.array(fold["time_grid"])
        assert len(grid) == 8 and grid[0] >= train_times.min() and grid[-1] <= train_times.max()
        chosen = fold["models"]["CoxPH"]["chosen"]["model__alpha"]
        assert chosen in fold["models"]["CoxPH"]["grid"]["model__alpha"]


def test_parallel_grid_and_forest_give_the_serial_results(run_config, tmp_path):
    # worker processes score the grid and threads grow RSF's trees: same choices and metrics as one core
    results = {}
    for n_jobs in (1, 2):
        cfg = run_config(
            [f"tuning.n_jobs={n_jobs}", f"estimators.RSF.n_jobs={n_jobs}", f"output_dir={tmp_path / str(n_jobs)}"],
            n_patients=40,
        )
        results[n_jobs] = run_survival(cfg)[0]
    serial, parallel = results[1], results[2]
    assert not serial.errors and not parallel.errors
    pd.testing.assert_frame_equal(serial.metrics, parallel.metrics)
    for k, fold in serial.folds.items():
        for name, settings in fold["models"].items():
            other = parallel.folds[k]["models"][name]
            assert settings["chosen"] == other["chosen"] and settings["selected_features"] == other["selected_features"]


def test_failing_and_non_converging_models_are_recorded(run_config):
    # RSF cannot be built with this max_features; CoxPH stops after one Newton step
    cfg = run_config(
        ["models=[RSF,CoxPH]", "estimators.RSF.max_features=bogus", "estimators.CoxPH.n_iter=1"], n_patients=40
    )
    result, summary, _ = run_survival(cfg)
    rsf = result.metrics[result.metrics["model"] == "RSF"]
    assert rsf["value"].isna().all() and rsf["note"].str.startswith("fit failed").all()
    assert len(result.errors) == 5
    coxph = result.metrics[result.metrics["model"] == "CoxPH"]
    assert coxph["note"].str.contains("ConvergenceWarning").all()
    assert summary.set_index(["model", "metric"]).loc[("CoxPH", "c_index"), "n_folds"] == 5


@pytest.mark.slow
def test_command_line(run_command, tmp_path):
    manifest = fabricate_run(tmp_path / "run", n_patients=40)
    out = tmp_path / "elsewhere"
    done = run_command(
        "survival", f"run_dir={tmp_path / 'run'}", f"data.manifest={manifest}", f"output_dir={out}",
        "models=[CoxPH,FSVM]", "selection.univariate_cox=false", "risk_groups.threshold=median", *FAST, timeout=120,
    )
    assert "c_index" in done.stdout and "CoxPH" in done.stdout and "N/A" in done.stdout
    logrank = pd.read_csv(out / "logrank.csv")
    assert (logrank["threshold"] == "median").all()
    assert (logrank["n_low"] == 20).all()  # 8 test patients per fold, 4 at or below the median
