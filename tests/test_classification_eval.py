"""The classification framework: DeLong, splits, leakage-free evaluation, metrics, tasks, the stage."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from radiopath.classification.base import PIPELINES, CasePipeline
from radiopath.classification.calibration import calibration_table
from radiopath.classification.delong import delong_covariance, delong_test
from radiopath.classification.metrics import bootstrap_weights, metric_functions, score_predictions, youden_threshold
from radiopath.classification.parallel import limited_threads
from radiopath.classification.run import PipelineSpec, evaluate
from radiopath.classification.sharing import fit_once, shared_fits
from radiopath.classification.splits import TEST, make_splits
from radiopath.classification.stage import pipeline_specs, run_classification
from radiopath.classification.tasks import load_task
from radiopath.errors import ManifestError

CALLS: list[tuple[str, list[str]]] = []  # (fit | predict, case ids) of every SpyPipeline


@PIPELINES.register("test_spy")
class SpyPipeline(CasePipeline):
    """Logistic score of ``tumour_size_mm`` standardised with training statistics; records every call."""

    def __init__(self, random_state: int = 0, slope: float = 1.0):
        self.slope = slope

    def fit(self, cases, y):
        CALLS.append(("fit", list(cases["case_id"])))
        self.mean_, self.std_ = cases["tumour_size_mm"].mean(), cases["tumour_size_mm"].std() + 1e-9
        return self

    def predict_proba(self, cases):
        CALLS.append(("predict", list(cases["case_id"])))
        return 1 / (1 + np.exp(-self.slope * (cases["tumour_size_mm"].to_numpy() - self.mean_) / self.std_))


TRAININGS: list[str] = []  # the shared sub-fits of every SharedFitPipeline that actually ran


@PIPELINES.register("test_shared_fit")
class SharedFitPipeline(SpyPipeline):
    """The spy, plus a sub-fit shared through fit_once (keyed by the training cases) that records each run."""

    def fit(self, cases, y):
        key = {"fit": "test", "cases": list(cases["case_id"])}
        self.sub_ = fit_once(key, lambda: TRAININGS.append(str(key)) or len(TRAININGS))
        return super().fit(cases, y)


def structural_components_direct(y, scores):
    """DeLong's components by their O(m n) definition: psi(x, z) = 1 if x > z, 1/2 if equal."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    return psi.mean(axis=(1, 2)), psi.mean(axis=2), psi.mean(axis=1)


@pytest.fixture
def scored():
    rng = np.random.default_rng(3)
    y = np.array([1] * 23 + [0] * 31)
    a = y * 1.2 + rng.normal(size=len(y))
    b = np.round(0.6 * a + y * 0.3 + rng.normal(scale=0.8, size=len(y)), 1)  # ties within and across classes
    return y, np.vstack([a, b])


def test_delong_covariance_matches_the_direct_structural_components(scored):
    y, scores = scored
    aucs, cov = delong_covariance(y, scores)
    direct_auc, v10, v01 = structural_components_direct(y, scores)
    direct_cov = np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]
    assert aucs == pytest.approx(direct_auc, abs=1e-12)
    assert aucs == pytest.approx([roc_auc_score(y, s) for s in scores], abs=1e-12)
    np.testing.assert_allclose(cov, direct_cov, rtol=1e-10, atol=1e-14)

    result = delong_test(y, scores[0], scores[1])
    variance = direct_cov[0, 0] + direct_cov[1, 1] - 2 * direct_cov[0, 1]
    z = (direct_auc[0] - direct_auc[1]) / np.sqrt(variance)
    assert result.variance == pytest.approx(variance, rel=1e-10)
    assert result.z == pytest.approx(z, rel=1e-10)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-10)
    assert result.ci_low == pytest.approx(result.difference - 1.959964 * np.sqrt(variance), abs=1e-6)


def test_delong_variance_agrees_with_the_bootstrap(scored):
    y, scores = scored
    result = delong_test(y, scores[0], scores[1])
    rng = np.random.default_rng(0)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    differences = []
    for _ in range(2000):  # stratified: DeLong's variance holds the class sizes fixed
        index = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        differences.append(roc_auc_score(y[index], scores[0, index]) - roc_auc_score(y[index], scores[1, index]))
    assert np.var(differences) == pytest.approx(result.variance, rel=0.2)


def test_delong_identical_scores_and_bad_input():
    y = np.array([0, 1, 0, 1, 1])
    p = np.array([0.1, 0.8, 0.3, 0.6, 0.2])
    same = delong_test(y, p, p)
    assert (same.difference, same.p_value) == (0.0, 1.0)
    with pytest.raises(ValueError, match="both classes"):
        delong_test(np.ones(5, int), p, p)


def test_splits_are_stratified_disjoint_and_reject_tiny_classes():
    y = np.array([1] * 40 + [0] * 20)
    ids = [f"c{i}" for i in range(60)]
    splits = make_splits(ids, y, test_fraction=0.2, n_folds=5, seed=1)
    assert (splits["fold"] == TEST).sum() == 12
    assert splits.loc[splits["fold"] == TEST, "y"].sum() == 8
    for k in range(5):
        fold = splits[splits["fold"] == k]
        assert len(fold) >= 9 and fold["y"].sum() in (6, 7)
    with pytest.raises(ValueError, match="1 positive"):
        make_splits(ids[:21], np.array([0] * 20 + [1]), 0.2, 5, 0)


def _clinical_cases(n=60, seed=0, effect=15.0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    return pd.DataFrame({"case_id": [f"p{i:02d}" for i in range(n)],
                         "tumour_size_mm": 30 + effect * y + rng.normal(0, 8, n)}), y


@pytest.mark.parametrize("test_model", ["ensemble", "refit"])
def test_no_held_out_patient_reaches_fit(test_model):
    cases, y = _clinical_cases()
    splits = make_splits(cases["case_id"], y, 0.25, 4, seed=2)
    CALLS.clear()
    result = evaluate([PipelineSpec("spy", "test_spy")], cases, splits, seed=0, test_model=test_model,
                      show_progress=False)
    fold = splits.set_index("case_id")["fold"]
    test_ids = set(fold.index[fold == TEST])
    fits = [ids for kind, ids in CALLS if kind == "fit"]
    predicts = [ids for kind, ids in CALLS if kind == "predict"]
    assert len(fits) == 4 + (test_model == "refit")
    for k, ids in enumerate(fits[:4]):
        assert set(ids) == set(fold.index[(fold != TEST) & (fold != k)])  # the other folds, nothing else
        assert set(predicts[k if test_model == "refit" else 2 * k]) == set(fold.index[fold == k])
    assert all(not set(ids) & test_ids for ids in fits)
    if test_model == "refit":
        assert set(fits[4]) == set(fold.index[fold != TEST]) and set(predicts[4]) == test_ids
    pred = result.predictions
    assert set(pred.loc[pred["split"] == "test", "case_id"]) == test_ids
    assert sorted(pred.loc[pred["split"] == "cv", "fold"].unique()) == [0, 1, 2, 3]
    assert len(pred) == len(cases) and result.failures == []


def test_a_failing_pipeline_is_recorded_and_the_others_finish():
    cases, y = _clinical_cases()
    splits = make_splits(cases["case_id"], y, 0.25, 4, seed=2)
    specs = [PipelineSpec("bad", "test_spy", {"unknown_option": 1}), PipelineSpec("spy", "test_spy")]
    result = evaluate(specs, cases, splits, seed=0, test_model="ensemble", show_progress=False)
    assert [name for name, _ in result.failures] == ["bad"] and "unknown_option" in result.failures[0][1]
    assert set(result.predictions["pipeline"]) == {"spy"}


def test_youden_threshold_and_thresholded_metrics():
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.35, 0.4, 0.8, 0.9, 0.7, 0.65])
    assert youden_threshold(y, p) == pytest.approx(0.4)  # sens 1, spec 3/4
    table = score_predictions(y, p, threshold=0.5, n_boot=200, seed=0, level=0.95).set_index("metric")
    # at 0.5: TP 3 (0.65, 0.8, 0.9), FN 1 (0.4), FP 1 (0.7), TN 3
    assert table.loc["sensitivity", "value"] == 0.75 and table.loc["specificity", "value"] == 0.75
    assert table.loc["accuracy", "value"] == 0.75 and table.loc["f1", "value"] == 0.75
    assert table.loc["brier", "value"] == pytest.approx(np.mean((p - y) ** 2))
    assert table.loc["roc_auc", "value"] == pytest.approx(roc_auc_score(y, p))
    assert (table["ci_low"] <= table["value"]).all() and (table["value"] <= table["ci_high"]).all()


def test_vectorised_bootstrap_metrics_equal_the_resampled_scikit_learn_ones():
    rng = np.random.default_rng(5)
    y = (rng.random(40) < 0.4).astype(int)
    p = np.round(np.clip(0.3 * y + rng.random(40) * 0.7, 0, 1), 1)  # many ties
    weights = bootstrap_weights(y, 60, seed=2)
    assert weights.shape[1] == 40 and (weights.sum(axis=1) == 40).all()
    metrics = metric_functions(threshold=0.5)
    for b in range(len(weights)):
        index = np.repeat(np.arange(40), weights[b].astype(int))  # the resample as case indices
        yb, pb = y[index], p[index]
        assert metrics["roc_auc"](weights[b:b + 1], y, p)[0] == pytest.approx(roc_auc_score(yb, pb))
        assert metrics["pr_auc"](weights[b:b + 1], y, p)[0] == pytest.approx(average_precision_score(yb, pb))
        predicted = pb >= 0.5
        assert metrics["sensitivity"](weights[b:b + 1], y, p)[0] == pytest.approx(predicted[yb == 1].mean())
        assert metrics["accuracy"](weights[b:b + 1], y, p)[0] == pytest.approx((predicted == yb).mean())
        assert metrics["brier"](weights[b:b + 1], y, p)[0] == pytest.approx(np.mean((pb - yb) ** 2))


def test_bootstrap_skips_one_class_resamples_and_keeps_the_seeded_draws():
    y = np.array([1, 0, 0, 0, 0, 0])
    weights = bootstrap_weights(y, 300, seed=0)
    assert len(weights) < 300 and (weights[:, 0] > 0).all() and (weights[:, 1:].sum(axis=1) > 0).all()
    rng = np.random.default_rng(0)  # the same resamples as one draw per resample from the seed
    first = next(index for index in (rng.integers(0, 6, 6) for _ in range(300)) if 0 < y[index].sum() < 6)
    np.testing.assert_array_equal(weights[0], np.bincount(first, minlength=6))


def test_calibration_bins_and_bootstrap_intervals():
    y = np.array([0, 0, 1, 0, 1, 1, 1, 1])
    p = np.array([0.05, 0.1, 0.15, 0.55, 0.6, 0.95, 1.0, 0.97])
    table = calibration_table(y, p, n_bins=2, n_boot=500, seed=0, level=0.9).set_index("bin")
    assert list(table["n"]) == [3, 5]  # p = 1 falls in the last bin
    assert table.loc[0, "observed"] == pytest.approx(1 / 3) and table.loc[1, "observed"] == pytest.approx(0.8)
    assert table.loc[1, "mean_predicted"] == pytest.approx(np.mean([0.55, 0.6, 0.95, 1.0, 0.97]))
    assert table.loc[0, "ci_low"] == 0.0 and table.loc[0, "ci_high"] <= 1.0


def test_shared_fits_train_once_per_fold_and_key_only_inside_the_block():
    cases, y = _clinical_cases()
    splits = make_splits(cases["case_id"], y, 0.25, 4, seed=2)
    TRAININGS.clear()
    specs = [PipelineSpec("a", "test_shared_fit"), PipelineSpec("b", "test_shared_fit", {"slope": 2.0})]
    result = evaluate(specs, cases, splits, seed=0, test_model="refit", show_progress=False)
    assert result.failures == [] and len(TRAININGS) == 5  # 4 folds + the refit, each shared by a and b
    assert len(set(TRAININGS)) == 5
    with shared_fits():
        assert fit_once({"k": 1}, lambda: object()) is fit_once({"k": 1}, lambda: object())
        assert fit_once({"k": 1}, lambda: 1) != fit_once({"k": 2}, lambda: 2)
    assert fit_once({"k": 1}, lambda: object()) is not fit_once({"k": 1}, lambda: object())


def test_limited_threads_sets_and_restores_torch_and_simpleitk():
    torch_before, itk_before = torch.get_num_threads(), sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    with limited_threads(1):
        assert torch.get_num_threads() == 1 and sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 1
    assert torch.get_num_threads() == torch_before
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == itk_before
    with limited_threads(None):
        assert torch.get_num_threads() == torch_before
    with pytest.raises(ValueError, match="threads"):
        with limited_threads(0):
            pass


def _write_manifest(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_task_excludes_and_lists_missing_labels(tmp_path):
    manifest = _write_manifest(tmp_path / "m.csv", [
        {"case_id": "a", "malignant": 1, "high_grade": 1}, {"case_id": "b", "malignant": 1, "high_grade": None},
        {"case_id": "c", "malignant": 0, "high_grade": None}, {"case_id": "d", "malignant": None, "high_grade": 0},
        {"case_id": "e", "malignant": 1, "high_grade": 0},
    ])
    task = load_task(manifest, "grade", "high_grade", {"malignant": 1}, negatives={})
    assert list(task.cases["case_id"]) == ["a", "e"] and list(task.y) == [1, 0]
    assert dict(zip(task.excluded["case_id"], task.excluded["reason"])) == {
        "d": "no malignant value", "b": "no high_grade label"}
    assert task.n_outside == 1 and "excluded: d, b" in task.summary()
    malignancy = load_task(manifest, "malignancy", "malignant", {}, negatives={})
    assert list(malignancy.excluded["case_id"]) == ["d"]


def test_task_rejects_a_label_that_is_not_binary(tmp_path):
    manifest = _write_manifest(tmp_path / "m.csv", [{"case_id": "a", "malignant": 1}, {"case_id": "b", "malignant": 2}])
    with pytest.raises(ManifestError, match="case 'b': malignant must be 0 or 1"):
        load_task(manifest, "malignancy", "malignant", {}, negatives={})


def test_stage_writes_tables_figures_and_report(compose_config, tmp_path):
    cases, y = _clinical_cases(n=80, seed=4, effect=8.0)
    cases["malignant"] = y
    cases.loc[3, "malignant"] = None
    manifest = _write_manifest(tmp_path / "manifest.csv", cases.to_dict("records"))
    out = tmp_path / "out"
    cfg = compose_config("classify", [
        f"data.manifest={manifest}", f"output_dir={out}", "progress=false", "evaluation.n_boot=200",
        "+pipelines.size.pipeline=test_spy", "+pipelines.flat.pipeline=test_spy",
        "+pipelines.flat.kwargs.slope=0.2",
    ])
    task, evaluation, _ = run_classification(cfg)
    assert list(task.excluded["case_id"]) == ["p03"]
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns) == ["pipeline", "case_id", "split", "fold", "y", "p"]
    assert len(predictions) == 2 * 79
    metrics = pd.read_csv(out / "metrics.csv")
    auc = metrics[(metrics["metric"] == "roc_auc") & (metrics["split"] == "test")].set_index("pipeline")
    assert (auc["value"] > 0.6).all() and (auc["ci_low"] < auc["value"]).all() and (auc["ci_high"] <= 1).all()
    # A monotone rescaling of the same score: equal AUCs, DeLong p = 1.
    delong = pd.read_csv(out / "delong.csv")
    assert len(delong) == 2 and delong["p_value"].tolist() == [1.0, 1.0]
    assert set(pd.read_csv(out / "calibration.csv")["pipeline"]) == {"size", "flat"}
    assert (out / "figures" / "roc.png").stat().st_size > 0 and (out / "figures" / "calibration.png").is_file()
    page = (out / "report.html").read_text()
    assert "DeLong" in page and "figures/roc.png" in page and "p03" in page


@pytest.mark.parametrize("task", ["malignancy", "grade", "aggressiveness"])
def test_experiments_compose_task_and_pipelines(compose_config, task):
    cfg = compose_config("classify", [f"experiment_classify={task}_tr"])
    assert cfg.task.name == task and cfg.output_dir == f"runs/demo/classify/{task}_tr"
    specs = pipeline_specs(cfg)
    assert [(s.label, s.name) for s in specs] == [("tr_rf", "tr_rf"), ("tr_xgb", "tr_xgb")]
    assert specs[0].kwargs["radiomics"]["image_types"] == ["Original", "Wavelet", "LoG"]
    assert specs[0].kwargs["classifier"] == {"n_estimators": 100, "max_depth": 10, "n_jobs": 1}


def test_demo_experiments_are_the_paper_pipelines_at_demo_size(compose_config):
    paper = compose_config("classify", ["experiment_classify=malignancy_deep"])
    demo = compose_config("classify", ["experiment_classify=malignancy_deep_demo"])
    tr_demo = compose_config("classify", ["experiment_classify=grade_tr", "classify/radiomics=demo"])
    paper_specs, demo_specs = pipeline_specs(paper), pipeline_specs(demo)
    assert [s.name for s in demo_specs] == [s.name for s in paper_specs] and len(demo_specs) == 6
    demo_kwargs = {s.label: s.kwargs for s in demo_specs}
    assert demo.name == "malignancy_deep_demo" and demo.evaluation.n_folds == 3
    assert demo_kwargs["simclr_rf"]["resnet_blocks"] == [1, 1, 1, 1]
    assert {s.label: s.kwargs for s in paper_specs}["simclr_rf"]["resnet_blocks"] == [2, 2, 2, 2]
    # One RGCNN for rgcnn, cr_rf and cr_tr_rf; one SimCLR encoder for both SimCLR pipelines.
    rgcnn = demo_kwargs["rgcnn"]
    assert demo_kwargs["cr_rf"]["rgcnn"]["kwargs"] == rgcnn == demo_kwargs["cr_tr_rf"]["rgcnn"]["kwargs"]
    simclr = {k: v for k, v in demo_kwargs["simclr_rf"].items() if not k.startswith(("rf_", "mlp_"))}
    assert simclr == {k: v for k, v in demo_kwargs["simclr_mlp"].items() if not k.startswith(("rf_", "mlp_"))}
    # Every input on the demo radiomics' 2 mm grid, the TR tasks' radiomics the same as the deep ones'.
    assert {rgcnn["spacing_mm"], rgcnn["radiomics"]["spacing_mm"], demo_kwargs["multiphase"]["spacing_mm"]} == {2.0}
    assert pipeline_specs(tr_demo)[0].kwargs["radiomics"] == rgcnn["radiomics"]
    assert rgcnn["radiomics"]["image_types"] == ["Original", "LoG"]


def test_stage_with_every_pipeline_failing_still_reports(compose_config, tmp_path):
    cases, y = _clinical_cases()
    manifest = _write_manifest(tmp_path / "manifest.csv", cases.assign(malignant=y).to_dict("records"))
    cfg = compose_config("classify", [f"data.manifest={manifest}", f"output_dir={tmp_path / 'out'}", "progress=false",
                                      "+pipelines.bad.pipeline=test_spy", "+pipelines.bad.kwargs.nope=1"])
    _, evaluation, out = run_classification(cfg)
    assert [name for name, _ in evaluation.failures] == ["bad"]
    assert pd.read_csv(out / "failures.csv")["pipeline"].tolist() == ["bad"]
    assert "bad failed: TypeError" in (out / "report.html").read_text()
