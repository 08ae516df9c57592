"""The clinical evaluation: splits by centre, nested CV (spy), the aggressiveness task, readers, subgroups,
precision and confusion matrices, and the stage writing every analysis into its report."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import precision_score, roc_auc_score

from radiopath.classification.base import PIPELINES, CasePipeline
from radiopath.classification.metrics import score_predictions
from radiopath.classification.readers import matched_threshold, mcnemar_p, reader_table
from radiopath.classification.run import PipelineSpec, evaluate
from radiopath.classification.splits import TEST, centre_splits, make_splits
from radiopath.classification.stage import pipeline_specs, run_classification
from radiopath.classification.subgroups import subgroup_table
from radiopath.classification.tasks import load_task
from radiopath.errors import ConfigError

CALLS: list[tuple[str, frozenset, float]] = []  # (fit | predict, case ids, slope) of every NestedSpy call


@PIPELINES.register("test_nested_spy")
class NestedSpy(CasePipeline):
    """Logistic score of standardised ``tumour_size_mm`` with a tunable ``slope``; records every call."""

    def __init__(self, random_state: int, slope: float):
        self.slope = slope

    def fit(self, cases, y):
        CALLS.append(("fit", frozenset(cases["case_id"]), self.slope))
        self.mean_, self.std_ = cases["tumour_size_mm"].mean(), cases["tumour_size_mm"].std() + 1e-9
        return self

    def predict_proba(self, cases):
        CALLS.append(("predict", frozenset(cases["case_id"]), self.slope))
        return 1 / (1 + np.exp(-self.slope * (cases["tumour_size_mm"].to_numpy() - self.mean_) / self.std_))


def cohort(n=120, seed=0) -> pd.DataFrame:
    """Manifest rows: size carries the label; two centres, survival endpoints, stage, histology, readers."""
    rng = np.random.default_rng(seed)
    malignant = (rng.random(n) < 0.75).astype(int)
    aggressive = np.where(malignant == 1, (rng.random(n) < 0.45).astype(float), np.nan)
    positive = np.nan_to_num(aggressive)
    size = 30 + 12 * positive + rng.normal(0, 6, n)
    hazard = np.exp(1.2 * positive)
    time = np.minimum(900 * rng.exponential(size=n) / hazard, rng.uniform(400, 3000, n)).round() + 1
    event = (rng.random(n) < 0.75).astype(int)
    return pd.DataFrame({
        "case_id": [f"p{i:03d}" for i in range(n)], "malignant": malignant, "aggressive": aggressive,
        "tumour_size_mm": size, "centre": np.where(rng.random(n) < 0.65, "A", "B"),
        "tnm_stage": np.where(malignant == 1, rng.integers(1, 5, n), np.nan), "histology": rng.choice(["cc", "pap"], n),
        "age": rng.normal(60, 10, n).round(), "sex": rng.choice(["M", "F"], n),
        **{f"{e}_{c}": v for e in ("os", "dss", "rfs") for c, v in (("time", time), ("event", event))},
        "reader_a": np.where(malignant == 1, rng.random(n) < 0.85, rng.random(n) < 0.3).astype(int),
        "reader_b": np.where(malignant == 1, rng.random(n) < 0.75, rng.random(n) < 0.2).astype(int),
    })


def test_centre_splits_keep_the_test_centres_out_of_every_fold():
    frame = cohort()
    y = frame["malignant"].to_numpy()
    splits = centre_splits(case_ids=frame["case_id"], y=y, centres=frame["centre"], train_centres=["A"],
                           test_centres=["B"], test_fraction=0.2, n_folds=4, seed=0)
    assert list(splits["case_id"]) == list(frame["case_id"]) and list(splits["centre"]) == list(frame["centre"])
    external = splits["part"] == "external"
    assert (external == (frame["centre"] == "B")).all() and (splits.loc[external, "fold"] == TEST).all()
    inside = splits[~external]
    assert set(inside["part"]) == {"cv", "test"} and sorted(inside["fold"].unique()) == [-1, 0, 1, 2, 3]
    with pytest.raises(ValueError, match="exactly one"):
        centre_splits(case_ids=frame["case_id"], y=y, centres=frame["centre"], train_centres=["A"],
                      test_centres=["C"], test_fraction=0.2, n_folds=4, seed=0)


def test_nested_cv_tunes_on_the_outer_training_part_only():
    frame = cohort()
    y = frame["malignant"].to_numpy()
    splits = make_splits(frame["case_id"], y, 0.25, 4, seed=1)
    spec = PipelineSpec("spy", "test_nested_spy", {"slope": 1.0}, {"slope": [-1.0, 0.5, 2.0]})
    CALLS.clear()
    result = evaluate([spec], frame, splits, seed=0, test_model="ensemble", show_progress=False, nested_folds=3)
    fold = splits.set_index("case_id")["fold"]
    per_fold = 3 * 3 * 2 + 1 + 2  # (grid points x inner folds) x (fit, predict), then the outer fit and 2 scorings
    assert len(CALLS) == 4 * per_fold
    chosen = result.tuning[result.tuning["chosen"]]
    for k in range(4):
        outer_train = frozenset(fold.index[(fold != TEST) & (fold != k)])
        outer_test = frozenset(fold.index[(fold == TEST) | (fold == k)])
        block = CALLS[k * per_fold:(k + 1) * per_fold]
        inner, final = block[:-3], block[-3:]
        # The spy's proof: no patient of the outer test (held-out fold, test part) reaches inner tuning.
        assert all(ids <= outer_train and not ids & outer_test for _, ids, _ in inner)
        for slope in (-1.0, 0.5, 2.0):  # every grid point validated once on each outer training case
            validated = [ids for kind, ids, s in inner if kind == "predict" and s == slope]
            assert len(validated) == 3 and frozenset().union(*validated) == outer_train
        best = float(chosen.loc[chosen["fold"] == k, "params"].iloc[0].split(": ")[1].rstrip("}"))
        assert final[0] == ("fit", outer_train, best) and best > 0  # the negative slope loses
    assert (result.tuning.loc[result.tuning["params"] == '{"slope": -1.0}', "inner_auc_mean"] < 0.5).all()
    assert set(result.predictions["split"]) == {"cv", "test"}


def test_aggressiveness_counts_benign_as_indolent_and_the_malignant_only_task_keeps_the_old_definition(tmp_path):
    manifest = tmp_path / "m.csv"
    pd.DataFrame([{"case_id": "a", "malignant": 1, "aggressive": 1}, {"case_id": "b", "malignant": 0},
                  {"case_id": "c", "malignant": 1, "aggressive": 0}, {"case_id": "d", "malignant": 1}]).to_csv(
        manifest, index=False)
    task = load_task(manifest, "aggressiveness", "aggressive", {}, negatives={"malignant": 0})
    assert list(task.cases["case_id"]) == ["a", "b", "c"] and list(task.y) == [1, 0, 0]
    assert list(task.excluded["case_id"]) == ["d"]  # malignant without a label: excluded and listed
    old = load_task(manifest, "aggressiveness_malignant", "aggressive", {"malignant": 1}, negatives={})
    assert list(old.cases["case_id"]) == ["a", "c"] and old.n_outside == 1


def test_precision_is_reported_with_its_bootstrap_interval():
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.35, 0.4, 0.8, 0.9, 0.7, 0.65])
    table = score_predictions(y, p, threshold=0.5, n_boot=200, seed=0, level=0.95).set_index("metric")
    assert table.loc["precision", "value"] == pytest.approx(precision_score(y, p >= 0.5))
    assert table.loc["precision", "ci_low"] <= table.loc["precision", "value"] <= table.loc["precision", "ci_high"]


def scored_frame(n=80, seed=3) -> pd.DataFrame:
    frame = cohort(n, seed)
    y = frame["malignant"].to_numpy()
    p = np.clip(0.35 * y + np.random.default_rng(seed).random(n) * 0.65, 0, 1)
    return frame.assign(set="test", pipeline="model", y=y, p=p, threshold=0.5)


def test_readers_are_compared_with_the_model_at_their_operating_points():
    scored = scored_frame()
    table = reader_table(scored=scored, columns=["reader_a", "reader_b"]).set_index("reader")
    y, p, calls = scored["y"].to_numpy(), scored["p"].to_numpy(), scored["reader_a"].to_numpy()
    a = table.loc["reader_a"]
    assert a["reader_sensitivity"] == pytest.approx(calls[y == 1].mean())
    assert a["reader_specificity"] == pytest.approx(1 - calls[y == 0].mean())
    cut = matched_threshold(y, p, sensitivity=a["reader_sensitivity"])
    assert (p[y == 1] >= cut).mean() >= a["reader_sensitivity"]
    assert a["model_specificity_at_reader_sensitivity"] == pytest.approx((p[y == 0] < cut).mean())
    assert 0 <= a["p_mcnemar_specificity"] <= 1 and 0 <= a["p_mcnemar_accuracy"] <= 1
    mean = table.loc["mean of readers"]
    assert mean["reader_sensitivity"] == pytest.approx(table.loc[["reader_a", "reader_b"], "reader_sensitivity"].mean())
    assert np.isnan(mean["p_mcnemar_sensitivity"])
    assert mcnemar_p(np.array([1, 1, 0]), np.array([1, 1, 0]), np.array([1, 1, 0])) == 1.0


def test_subgroups_report_auc_per_level_and_na_for_one_class():
    scored = scored_frame()
    table = subgroup_table(scored=scored, columns=["centre", "tnm_stage", "absent"])
    centre = table[table["subgroup"] == "centre"].set_index("level")
    part = scored[scored["centre"] == "B"]
    assert centre.loc["B", "roc_auc"] == pytest.approx(roc_auc_score(part["y"], part["p"]))
    missing = table[(table["subgroup"] == "tnm_stage") & (table["level"] == "missing")].iloc[0]  # benign: no stage
    assert np.isnan(missing["roc_auc"]) and missing["reason"] == "one class only (negative)"
    assert set(table["subgroup"]) == {"centre", "tnm_stage"}


def _stage_cfg(compose_config, tmp_path: Path, *overrides: str):
    manifest = tmp_path / "manifest.csv"
    cohort(160, seed=5).to_csv(manifest, index=False)
    return compose_config("classify", [
        f"data.manifest={manifest}", f"output_dir={tmp_path / 'out'}", "progress=false", "evaluation.n_boot=50",
        "evaluation.prognosis.n_boot=20", "+pipelines.spy.pipeline=test_nested_spy", "+pipelines.spy.kwargs.slope=1.0",
        *overrides])


def test_stage_by_centre_writes_external_metrics_prognosis_subgroups_and_report(compose_config, tmp_path):
    cfg = _stage_cfg(compose_config, tmp_path, "classify/task=aggressiveness", "classify/evaluation=by_centre",
                     "evaluation.nested=true", "evaluation.inner_folds=3", "+pipelines.spy.grid.slope=[0.5,-1.0]")
    task, evaluation, out = run_classification(cfg)
    assert task.n_outside == 0 and (task.y[task.cases["malignant"].to_numpy() == 0] == 0).all()
    external = pd.read_csv(out / "external" / "B" / "metrics.csv")
    assert {"roc_auc", "precision", "sensitivity"} <= set(external["metric"])
    scored_b = evaluation.predictions[evaluation.predictions["split"] == "external"]
    assert set(scored_b["case_id"]) == set(task.cases.loc[task.cases["centre"] == "B", "case_id"])
    hazard = pd.read_csv(out / "prognosis" / "hazard_ratios.csv")
    assert set(hazard["set"]) == {"test", "B"} and set(hazard["endpoint"]) == {"dss", "rfs", "os"}
    for name in ("cox_multivariable.csv", "c_index.csv", "survival_rates.csv", "forest.png", "km_B_os.png",
                 "subgroup_hazard_ratios.csv", "forest_subgroups_B.png"):
        assert (out / "prognosis" / name).stat().st_size > 0, name
    assert set(pd.read_csv(out / "confusion.csv")["set"]) == {"test", "B"}
    assert set(pd.read_csv(out / "subgroups.csv")["subgroup"]) == {"tnm_stage", "histology", "centre"}
    assert not (out / "readers.csv").exists()  # no readers of aggressiveness
    assert pd.read_csv(out / "tuning.csv")["chosen"].sum() == cfg.evaluation.n_folds
    page = (out / "report.html").read_text()
    for title in ("External centres", "Subgroups", "Prognosis: predicted groups", "Multivariable Cox",
                  "C-index", "Nested CV", "Confusion matrices", "prognosis/forest.png"):
        assert title in page, title
    assert "no readers for the aggressiveness task" in page


def test_stage_writes_readers_for_malignancy_and_skips_its_prognosis(compose_config, tmp_path):
    cfg = _stage_cfg(compose_config, tmp_path)
    _, _, out = run_classification(cfg)
    readers = pd.read_csv(out / "readers.csv")
    assert list(readers["reader"]) == ["reader_a", "reader_b", "mean of readers"]
    assert not (out / "prognosis").exists() and not (out / "external").exists()
    assert "task.prognosis = false" in (out / "report.html").read_text()


@pytest.mark.parametrize(("overrides", "key"), [
    (["evaluation.split=by_site"], "evaluation.split"),
    (["evaluation.split=by_centre"], "evaluation.train_centres"),
    (["classify/evaluation=by_centre", "evaluation.test_centres=[A]"], "evaluation.test_centres"),
    (["evaluation.nested=true"], "evaluation.nested"),
    (["evaluation.prognosis.horizon_years=0"], "evaluation.prognosis.horizon_years"),
    (["+pipelines.spy.grid.slope=1.0"], "pipelines.spy.grid.slope"),
    (["classify/evaluation=by_centre", "evaluation.centre_column=site"], "evaluation.centre_column"),
])
def test_bad_evaluation_settings_fail_at_start_naming_the_key(compose_config, tmp_path, overrides, key):
    cfg = _stage_cfg(compose_config, tmp_path, *overrides)
    with pytest.raises(ConfigError) as error:
        run_classification(cfg)
    assert error.value.key == key
    assert not (tmp_path / "out" / "predictions.csv").exists()


def test_the_demo_experiments_of_the_clinical_evaluation_compose(compose_config):
    centres = compose_config("classify", ["experiment_classify=aggressiveness_tr_centres"])
    assert centres.evaluation.split == "by_centre" and list(centres.evaluation.test_centres) == ["B"]
    assert centres.task.name == "aggressiveness" and dict(centres.task.negatives) == {"malignant": 0}
    nested = compose_config("classify", ["experiment_classify=aggressiveness_tr_nested"])
    assert nested.evaluation.nested and list(nested.pipelines) == ["tr_rf"]
    spec = pipeline_specs(nested)[0]
    assert spec.grid == {"pca_components": [5, 10], "classifier.max_depth": [3, 10]}
    old = compose_config("classify", ["experiment_classify=aggressiveness_tr", "classify/task=aggressiveness_malignant"])
    assert dict(old.task.population) == {"malignant": 1} and not old.task.negatives
