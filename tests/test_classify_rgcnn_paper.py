"""The RGCNN paper's parts of CT classification: its 1,316 TR features, voxel maps chosen on the
training part, and the random-forest importance of principal components (its Fig. 3)."""

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from omegaconf import OmegaConf

from radiopath.classification import ct_inputs
from radiopath.classification.base import PIPELINES
from radiopath.classification.pc_importance import plot_pc_importance
from radiopath.classification.pipelines.rgcnn import select_maps
from radiopath.classification.stage import pipeline_specs


def _write_case(folder, case_id: str, spread_hu: float, seed: int) -> dict:
    """A 40^3 CT at 1 mm with a 7 mm tumour whose HU spread is ``spread_hu``, and its mask."""
    rng = np.random.default_rng(seed)
    zyx = np.indices((40, 40, 40)) - 19.5
    tumour = (zyx ** 2).sum(axis=0) <= 7 ** 2
    noise = rng.standard_normal(tumour.shape)
    ct = np.where(tumour, 40 + spread_hu * noise, -50 + 10 * noise)
    row = {"case_id": case_id}
    for column, array in (("ct", ct.astype(np.float32)), ("mask", tumour.astype(np.uint8))):
        path = folder / f"{case_id}_{column}.nii.gz"
        sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
        row[column] = str(path)
    return row


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> pd.DataFrame:
    """12 synthetic cases: 6 homogeneous tumours (y = 0), 6 heterogeneous ones (y = 1)."""
    folder = tmp_path_factory.mktemp("synthetic")
    rows = [{**_write_case(folder, f"c{i:02d}", 60.0 if i % 2 else 5.0, i), "y": i % 2} for i in range(12)]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- TR feature set


@pytest.mark.parametrize(("overrides", "count"), [([], 1316), (["classify/radiomics=demo"], 128)])
def test_tr_settings_give_the_papers_1316_features_and_the_demo_128(compose_config, cases, overrides, count):
    radiomics = OmegaConf.to_container(compose_config("classify", overrides).radiomics, resolve=True)
    extracted = ct_inputs.scalar_radiomics(ct_inputs.rows(cases)[0], **{**radiomics, "cache_dir": None})
    names = [str(n) for n in extracted["names"]]
    assert extracted["values"].shape == (count,) and len(set(names)) == count and np.isfinite(extracted["values"]).all()
    if count == 1316:  # 14 images x 93 features (7 classes, GLCM with SumAverage) + 14 shape
        images = pd.Series([n.rsplit("_", 2)[0] for n in names if "_shape_" not in n]).value_counts()
        assert len(images) == 14 and set(images) == {93} and sum("_shape_" in n for n in names) == 14
        assert "original_glcm_SumAverage" in names and sum(n.endswith("_ngtdm_Busyness") for n in names) == 14


# --------------------------------------------------------------------------- voxel maps chosen on training cases


def test_select_maps_ranks_by_distance_of_auc_from_one_half():
    y = np.array([0, 0, 0, 1, 1, 1])
    values = np.column_stack([
        [1, 2, 3, 4, 5, 6],      # AUC 1
        [5, 5, 5, 5, 5, 5],      # constant: AUC 0.5
        [6, 5, 4, 3, 2, 1],      # AUC 0: as informative as AUC 1
        [1, 4, 2, 5, 3, 6],      # partly
    ]).astype(float)
    table = select_maps(values=values, names=["a", "b", "c", "d"], y=y, count=2)
    assert table["rank"].tolist() == [0, 3, 1, 2] and table.loc[table["chosen"], "feature"].tolist() == ["a", "c"]
    np.testing.assert_allclose(table["auc"], [1.0, 0.5, 0.0, 8 / 9])
    with pytest.raises(ValueError, match="only 4 map_candidates"):
        select_maps(values=values, names=["a", "b", "c", "d"], y=y, count=5)


def _tiny_rgcnn(compose_config, cache_dir) -> dict:
    """The paper's rgcnn kwargs (conf/classify/pipeline/rgcnn.yaml) at test size."""
    spec = next(s for s in pipeline_specs(compose_config("classify", ["experiment_classify=malignancy_deep"]))
                if s.name == "rgcnn")
    radiomics = {"features": {"firstorder": None}, "image_types": ["Original"], "spacing_mm": 2.0,
                 "margin_mm": 4.0, "cache_dir": None}
    return {**spec.kwargs, "crop_size": 16, "spacing_mm": 2.0, "map_stride": 2, "widths": [2, 2, 4, 4],
            "projection_dim": 4, "projector_hidden": 8, "epochs": 1, "batch_size": 4, "cache_dir": str(cache_dir),
            "radiomics": radiomics, "map_candidates": {"firstorder": None, "glcm": None}}


def test_rgcnn_chooses_its_maps_from_the_training_cases_only(compose_config, cases, tmp_path, monkeypatch):
    kwargs = _tiny_rgcnn(compose_config, tmp_path)
    assert kwargs["map_select"] == 5
    seen, volumes = {}, []
    values, volume = ct_inputs.tumour_values, ct_inputs.tumour_volume

    def recording_values(row, **kw):
        seen[row["case_id"]] = values(row, **kw)
        return seen[row["case_id"]]

    monkeypatch.setattr(ct_inputs, "tumour_values", recording_values)
    monkeypatch.setattr(ct_inputs, "tumour_volume",
                        lambda row, **kw: volumes.append((row["case_id"], kw["map_features"])) or volume(row, **kw))
    train, test = cases.iloc[:8], cases.iloc[8:]
    pipeline = PIPELINES.create("rgcnn", random_state=0, **kwargs).fit(train, train["y"].to_numpy())
    assert list(seen) == train["case_id"].tolist()  # the candidates' values of the training cases, nothing else

    table = pipeline.fitted_tables()["voxel_maps"]
    names = [str(n) for n in seen["c00"]["names"]]
    assert len(names) == 18 + 23 and table["feature"].tolist() == names  # first order + GLCM less SumAverage
    train_values = np.stack([seen[case]["values"] for case in train["case_id"]])
    pd.testing.assert_frame_equal(table, select_maps(values=train_values, names=names, y=train["y"].to_numpy(),
                                                     count=5))
    chosen = table.loc[table["chosen"], "feature"].tolist()
    used = [f"original_{cls}_{name}" for cls, names in pipeline.map_features_.items() for name in names]
    assert len(chosen) == 5 and sorted(used) == sorted(chosen)

    seen.clear()
    volumes.clear()
    proba = pipeline.predict_proba(test)
    assert seen == {} and proba.shape == (len(test),)  # scoring the held-out cases never ranks candidates
    assert [case for case, _ in volumes] == test["case_id"].tolist()
    assert all(features == pipeline.map_features_ for _, features in volumes)


def test_rgcnn_with_map_select_null_uses_the_fixed_maps(compose_config, cases, tmp_path, monkeypatch):
    kwargs = {**_tiny_rgcnn(compose_config, tmp_path), "map_select": None}
    monkeypatch.setattr(ct_inputs, "tumour_values", lambda row, **kw: pytest.fail("candidates ranked"))
    pipeline = PIPELINES.create("rgcnn", random_state=0, **kwargs).fit(cases.iloc[:8], cases["y"].to_numpy()[:8])
    assert pipeline.map_features_ == kwargs["map_features"] and pipeline.fitted_tables() == {}


# --------------------------------------------------------------------------- principal-component importance


def _synthetic_radiomics(monkeypatch, n_features: int = 30) -> pd.DataFrame:
    """40 cases whose 'radiomics' are random vectors, a third of them shifted with the label."""
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    x = rng.standard_normal((40, n_features)) + 3.0 * np.outer(y, np.arange(n_features) < n_features // 3)
    vectors = {f"p{i}": x[i].astype(np.float32) for i in range(40)}
    names = np.array([f"f{j}" for j in range(n_features)])
    monkeypatch.setattr(ct_inputs, "scalar_radiomics",
                        lambda row, **_: {"values": vectors[row["case_id"]], "names": names})
    return pd.DataFrame({"case_id": list(vectors), "y": y})


def test_tr_rf_reports_the_importance_of_its_principal_components(compose_config, monkeypatch, tmp_path):
    cases = _synthetic_radiomics(monkeypatch)
    specs = {s.name: s for s in pipeline_specs(compose_config("classify", ["experiment_classify=malignancy_tr"]))}
    forest = PIPELINES.create("tr_rf", random_state=0, **specs["tr_rf"].kwargs).fit(cases, cases["y"].to_numpy())
    table = forest.fitted_tables()["pc_importance"]
    assert table["component"].tolist() == [f"PC{k}" for k in range(10)] and set(table["block"]) == {"tr"}
    np.testing.assert_allclose(table["explained_variance_ratio"],
                               forest.model_.named_steps["pca"].explained_variance_ratio_)
    np.testing.assert_allclose(table["impurity_importance"].sum(), 1.0)
    # The label lives in the first component: the shifted features, correlated through it, dominate the variance.
    assert table["impurity_importance"].idxmax() == 0 and table["permutation_importance"].idxmax() == 0
    boosted = PIPELINES.create("tr_xgb", random_state=0, **specs["tr_xgb"].kwargs).fit(cases, cases["y"].to_numpy())
    assert boosted.fitted_tables() == {}

    folds = pd.concat([table.assign(fold=0),
                       table.assign(fold=1, impurity_importance=table["impurity_importance"] / 2)])
    path = plot_pc_importance(folds, path=tmp_path / "pc_importance.png", title="tr_rf", dpi=60)
    assert path.stat().st_size > 0 and sitk.ReadImage(str(path)).GetSize()[0] > 100


def test_a_missing_pipeline_setting_is_named(compose_config):
    kwargs = next(s for s in pipeline_specs(compose_config("classify", ["experiment_classify=malignancy_tr"]))
                  if s.name == "tr_rf").kwargs
    del kwargs["permutation_repeats"]
    with pytest.raises(TypeError, match="permutation_repeats"):
        PIPELINES.create("tr_rf", **kwargs)
