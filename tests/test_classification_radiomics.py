"""Traditional radiomics pipelines on a small demo cohort: fitted steps see training rows only, and TR beats chance."""

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from imblearn.over_sampling import SMOTE
from sklearn.metrics import roc_auc_score

from radiopath.classification import ct_inputs
from radiopath.classification.base import PIPELINES
from radiopath.classification.run import PipelineSpec, evaluate
from radiopath.classification.sharing import fresh_dict
from radiopath.classification.splits import TEST, make_splits
from radiopath.classification.tasks import load_task
from radiopath.data.demo_cohort import make_demo_cohort
from radiopath.data.readers import read_ct
from radiopath.errors import CaseError
from radiopath.layout import RECORD_NAME
from radiopath.preprocess.ct import preprocess_ct

# Small CTs and slides keep the cohort quick to draw; the radiomics are cheap ones on the original image.
TINY = {
    "ct": {"shape": [64, 64, 20], "spacing": [1.6, 1.6, 5.0]},
    "wsi": {"size_px": [512, 512]},
    "wsi_pattern": {"radius_um": [20.0, 40.0]},
}
RADIOMICS = {
    "spacing_mm": 1.6, "margin_mm": 4.0,
    "features": {"firstorder": None, "shape": None, "glcm": None, "glrlm": None},
    "image_types": ["Original"], "bin_count": 16,
}
SMALL = {"pca_components": 4, "smote_k_neighbors": 3}
OWN = {"tr_rf": {"permutation_repeats": 2}, "tr_xgb": {}}  # each pipeline's own settings


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    manifest = make_demo_cohort(tmp_path_factory.mktemp("cohort"), 30, 11, **TINY)
    return load_task(manifest, "malignancy", "malignant", {}, negatives={})


@pytest.fixture(scope="module")
def radiomics(task, tmp_path_factory):
    return {**RADIOMICS, "cache_dir": str(tmp_path_factory.mktemp("cache"))}


def test_tr_pipeline_fits_scaler_pca_and_smote_on_training_rows_only(task, radiomics, monkeypatch):
    seen = []
    original = SMOTE.fit_resample

    def recording(self, x, y):
        seen.append(np.array(x))
        return original(self, x, y)

    monkeypatch.setattr(SMOTE, "fit_resample", recording)
    train = np.arange(len(task.y)) % 3 != 0
    pipeline = PIPELINES.create("tr_rf", radiomics=radiomics, classifier={"n_estimators": 20}, **SMALL, **OWN["tr_rf"])
    pipeline.fit(task.cases[train].reset_index(drop=True), task.y[train])
    x_train = pipeline.features(task.cases[train])

    scale, pca = pipeline.model_.named_steps["scale"], pipeline.model_.named_steps["pca"]
    assert scale.n_samples_seen_ == train.sum() and pca.n_samples_ == train.sum()
    np.testing.assert_allclose(scale.mean_, x_train.mean(axis=0))
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], pca.transform(scale.transform(x_train)))  # SMOTE saw the training rows

    p = pipeline.predict_proba(task.cases[~train].reset_index(drop=True))
    assert len(seen) == 1 and p.shape == ((~train).sum(),)  # scoring never resamples
    assert scale.n_samples_seen_ == train.sum()


@pytest.mark.parametrize("name", ["tr_rf", "tr_xgb"])
def test_tr_beats_chance_on_demo_malignancy(task, radiomics, name):
    splits = make_splits(task.cases["case_id"], task.y, test_fraction=0.2, n_folds=3, seed=0)
    spec = PipelineSpec(name, name, {"radiomics": radiomics, **SMALL, **OWN[name], "classifier": {"n_estimators": 30}})
    result = evaluate([spec], task.cases, splits, seed=0, test_model="ensemble", show_progress=False)
    assert result.failures == []
    predictions = result.predictions
    assert set(predictions.loc[predictions["split"] == "test", "case_id"]) == set(
        splits.loc[splits["fold"] == TEST, "case_id"])
    # Out-of-fold AUC over the 24 non-test patients: benign demo tumours are small and fat-containing.
    cv = predictions[predictions["split"] == "cv"]
    assert roc_auc_score(cv["y"], cv["p"]) > 0.8


@pytest.mark.parametrize("crop", [{"crop": "margin", "margin_mm": 4.0}, {"crop": "fixed", "crop_size": (80, 80, 12)}])
def test_prepared_case_equals_preprocess_ct_and_is_read_once_per_case_when_shared(task, crop, monkeypatch):
    row = ct_inputs.rows(task.cases)[0]
    settings = {"spacing_mm": 1.6, "hu_window": (-500, 500), **crop}
    direct = preprocess_ct(row["case_id"], read_ct(row["ct"], "x"), read_ct(row["mask"], "x"),
                           normalisation="hu_window", **settings)  # 80 voxels leave the 64-voxel volume: padding
    reads = []
    monkeypatch.setattr(ct_inputs, "read_ct", lambda path, case_id: reads.append(path) or read_ct(path, case_id))
    with fresh_dict(ct_inputs._VOLUMES):
        ours = [ct_inputs.prepare_case(row, **settings) for _ in range(2)]
    assert len(reads) == 2  # CT and mask, once for both crops
    for prepared in ours:
        np.testing.assert_array_equal(prepared.image_array(), direct.image_array())
        np.testing.assert_array_equal(prepared.mask_array(), direct.mask_array())
        assert prepared.image.GetOrigin() == direct.image.GetOrigin()
    ct_inputs.prepare_case(row, **settings)
    assert len(reads) == 4  # outside prepare_inputs nothing is kept


def test_prepare_inputs_computes_pending_inputs_only(task, tmp_path):
    row = ct_inputs.rows(task.cases)[0]
    tr = functools.partial(ct_inputs.scalar_radiomics, **{**RADIOMICS, "cache_dir": str(tmp_path)})
    volume = functools.partial(ct_inputs.tumour_volume, spacing_mm=1.6, crop_size=16, cache_dir=str(tmp_path))
    uncached = functools.partial(ct_inputs.tumour_slices, spacing_mm=1.6, size=16, depth=8, cache_dir=None)
    assert ct_inputs.pending(tr, row) and ct_inputs.pending(volume, row) and not ct_inputs.pending(uncached, row)
    assert not list(tmp_path.rglob("*.npz"))  # asking computes nothing
    assert ct_inputs.prepare_inputs(row, [tr, volume, uncached]) == []
    assert len(list(tmp_path.rglob("*.npz"))) == 2 and not ct_inputs.pending(tr, row)
    np.testing.assert_array_equal(tr(row)["values"], ct_inputs.scalar_radiomics(row, **RADIOMICS)["values"])
    broken = functools.partial(ct_inputs.tumour_volume, spacing_mm=1.6, crop_size=16, cache_dir=str(tmp_path),
                               map_features={"glcm": ["NoSuchFeature"]})
    errors = ct_inputs.prepare_inputs(row, [broken])
    assert len(errors) == 1 and row["case_id"] in errors[0] and "NoSuchFeature" in errors[0]


def test_parallel_evaluation_equals_the_single_process_one(task, tmp_path):
    splits = make_splits(task.cases["case_id"], task.y, test_fraction=0.2, n_folds=3, seed=0)
    radiomics = {**RADIOMICS, "cache_dir": str(tmp_path)}  # a cold cache: the inputs are computed in the workers
    specs = [PipelineSpec(name, name, {"radiomics": radiomics, **SMALL, **OWN[name],
                                       "classifier": {"n_estimators": 20}})
             for name in ("tr_rf", "tr_xgb")]
    parallel = evaluate(specs, task.cases, splits, seed=0, test_model="ensemble", show_progress=False, jobs=2)
    assert len(list(tmp_path.rglob("*.npz"))) == len(task.cases)
    single = evaluate(specs, task.cases, splits, seed=0, test_model="ensemble", show_progress=False, jobs=1)
    assert parallel.failures == single.failures == []
    pd.testing.assert_frame_equal(parallel.predictions, single.predictions)
    pd.testing.assert_frame_equal(parallel.thresholds, single.thresholds)


def test_an_unusable_case_is_named(task, radiomics, tmp_path):
    cases = task.cases.head(4).copy()
    empty = tmp_path / "empty_mask.nii.gz"
    mask = sitk.ReadImage(cases.loc[1, "mask"])
    sitk.WriteImage(mask * 0, str(empty))
    cases.loc[1, "mask"] = str(empty)
    pipeline = PIPELINES.create("tr_rf", radiomics=radiomics, classifier={}, **SMALL, **OWN["tr_rf"])
    with pytest.raises(CaseError, match=cases.loc[1, "case_id"]):
        pipeline.fit(cases, np.array([0, 1, 0, 1]))


@pytest.mark.slow
def test_classify_command_on_the_demo_cohort(task, radiomics, run_command, tmp_path):
    # Same radiomics settings as the fixture, so the cached features are reused.
    manifest = task.cases["ct"].map(lambda p: Path(p).parents[1]).iloc[0] / "manifest.csv"
    overrides = [
        "experiment_classify=malignancy_tr", f"data.manifest={manifest}", f"output_dir={tmp_path}",
        f"radiomics.cache_dir={radiomics['cache_dir']}", "ct.spacing_mm=1.6", "ct.margin_mm=4.0",
        "radiomics.image_types=[Original]", "classify/radiomics/features@radiomics.features=fo_glcm_glrlm",
        "radiomics.log_sigma=[1.0,3.0]", "radiomics.bin_count=16", "evaluation.n_folds=3",
        "evaluation.n_boot=100", "progress=false",
        *[f"pipelines.{name}.kwargs.{key}={value}" for name in ("tr_rf", "tr_xgb") for key, value in SMALL.items()],
    ]
    result = run_command("classify", *overrides)
    assert "task malignancy (y = malignant): 30 cases" in result.stdout
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert set(metrics["pipeline"]) == {"tr_rf", "tr_xgb"}
    assert len(pd.read_csv(tmp_path / "delong.csv")) == 2 and (tmp_path / "report.html").is_file()
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert len(predictions) == 2 * 30 and set(predictions["split"]) == {"cv", "test"}
    record = json.loads((tmp_path / RECORD_NAME).read_text(encoding="utf-8"))
    assert record["stage"] == "classify" and record["dataset"]["cases"] == 30
    assert {entry["role"] for entry in record["inputs"]} >= {"cohort manifest", "splits"}
    # the forest's principal components per fit (the RGCNN paper's Fig. 3), tables and the figure in the report
    fits = sorted(path.name for path in (tmp_path / "pipelines" / "tr_rf").glob("*_pc_importance.csv"))
    assert fits == ["fold0_pc_importance.csv", "fold1_pc_importance.csv", "fold2_pc_importance.csv"]
    assert not (tmp_path / "pipelines" / "tr_xgb").exists()
    assert "figures/pc_importance_tr_rf.png" in (tmp_path / "report.html").read_text()
