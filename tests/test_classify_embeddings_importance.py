"""``simclr_rf`` / ``simclr_mlp``: the ``feature_importance`` table and feature selection inside the training part.

A tiny demo cohort (as in test_classification_deep.py), an untrained ResNet-10 encoder (epochs=0), small
slices and few trees keep every fit to a second or two.
"""

import numpy as np
from omegaconf import OmegaConf
import pytest
from sklearn.base import clone
from sklearn.feature_selection import SelectFromModel
from sklearn.pipeline import Pipeline

from conftest import TINY_DEMO, pipeline_kwargs
from radiopath.classification.base import PIPELINES
from radiopath.classification.pipelines.embeddings import three_classes
from radiopath.config import CONF_DIR
from radiopath.data.demo_cohort import make_demo_cohort
from radiopath.data.manifest import load_manifest

TINY = {**TINY_DEMO, "wsi": {"size_px": [512, 512]}}  # these pipelines read the CT only
COMMON = {"spacing_mm": 2.0, "hu_window": [-500, 500], "slice_size": 24, "slice_depth": 24, "target": "malignant",
          "epochs": 0, "resnet_blocks": [1, 1, 1, 1], "pca_components": 4, "select_n_estimators": 20,
          "permutation_repeats": 2, "cache_dir": None, "device": "cpu"}
SETTINGS = {"simclr_rf": pipeline_kwargs("simclr_rf", **COMMON, rf_n_estimators=20),
            "simclr_mlp": pipeline_kwargs("simclr_mlp", **COMMON)}
INPUTS = ["embedding_pc0", "embedding_pc1", "embedding_pc2", "embedding_pc3", "age", "sex", "tumour_size_mm"]
GROUPS = ["embedding"] * 4 + ["clinical", "clinical", "size"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """16 demo patients split 10 train / 6 test, both classes on each side."""
    cases = load_manifest(make_demo_cohort(tmp_path_factory.mktemp("cohort"), 16, 1, **TINY)).frame
    benign = cases.index[cases["malignant"] == 0]
    malignant = cases.index[cases["malignant"] == 1]
    assert len(benign) >= 4 and len(malignant) >= 6, "the seed must give both classes"
    test = list(benign[:2]) + list(malignant[:4])
    return cases.drop(index=test), cases.loc[test]


def fitted(name, train, **kwargs):
    return PIPELINES.create(name, **{**SETTINGS[name], **kwargs}).fit(train, train["malignant"].to_numpy())


@pytest.mark.parametrize("name", ["simclr_rf", "simclr_mlp"])
def test_feature_importance_has_one_row_per_classifier_input(cohort, name):
    train, _ = cohort
    pipeline = fitted(name, train)
    table = pipeline.fitted_tables()["feature_importance"]
    assert table["feature"].tolist() == INPUTS and table["group"].tolist() == GROUPS
    assert len(table) == pipeline.model_.named_steps["classifier"].n_features_in_
    assert table["selected"].all() and pipeline.selected_features_ == INPUTS
    assert table["selection_importance"].isna().all()
    assert np.isfinite(table[["permutation_importance", "permutation_std"]].to_numpy()).all()
    if name == "simclr_rf":
        assert table["impurity_importance"].sum() == pytest.approx(1.0)
    else:
        assert table["impurity_importance"].isna().all()


def test_raw_embedding_inputs_are_named_by_dimension(cohort):
    train, _ = cohort
    table = fitted("simclr_mlp", train, pca_components=None, permutation_repeats=1).feature_importance()
    assert table["feature"].tolist()[:2] == ["embedding_0", "embedding_1"] and len(table) == 512 + 3
    assert (table["group"] == "embedding").sum() == 512


def test_selection_is_fitted_once_on_the_training_cases_only(cohort, monkeypatch):
    train, test = cohort
    seen = []
    original = SelectFromModel.fit
    monkeypatch.setattr(SelectFromModel, "fit",
                        lambda self, x, y=None, **kw: seen.append((x.copy(), np.asarray(y).copy()))
                        or original(self, x, y, **kw))
    pipeline = fitted("simclr_rf", train, select_features=3)
    assert (three_classes(train) >= 0).all()  # every training case has a class, so all of them reach selection
    training_inputs = pipeline.model_[:-2].transform(pipeline._table(train))
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0][0], training_inputs, atol=1e-12)  # PCA's fit_transform vs transform
    np.testing.assert_array_equal(seen[0][1], three_classes(train))
    pipeline.predict_proba(test)
    pipeline.fitted_tables()
    assert len(seen) == 1  # neither prediction nor the importance table refits the selection
    test_inputs = pipeline.model_[:-2].transform(pipeline._table(test))
    distances = np.abs(seen[0][0][:, None, :] - test_inputs[None, :, :]).max(axis=2)
    assert distances.min() > 1e-6  # no test row among them


@pytest.mark.parametrize("name", ["simclr_rf", "simclr_mlp"])
def test_select_features_keeps_exactly_the_k_top_ranked_inputs(cohort, name):
    train, test = cohort
    pipeline = fitted(name, train, select_features=3)
    table = pipeline.feature_importance()
    top = table.nlargest(3, "selection_importance")["feature"]
    assert table["selected"].sum() == 3 and set(pipeline.selected_features_) == set(top)
    assert table.loc[table["selected"], "feature"].tolist() == pipeline.selected_features_
    assert pipeline.model_.named_steps["classifier"].n_features_in_ == 3
    dropped = table[~table["selected"]]
    assert (dropped["permutation_importance"] == 0).all()  # permuting an input the classifier never sees
    assert dropped["impurity_importance"].isna().all()
    if name == "simclr_rf":
        assert table.loc[table["selected"], "impurity_importance"].sum() == pytest.approx(1.0)
    p = pipeline.predict_proba(test)
    assert p.shape == (len(test),) and np.isfinite(p).all()


@pytest.mark.parametrize("name", ["simclr_rf", "simclr_mlp"])
def test_no_selection_gives_the_probabilities_of_the_pipeline_without_a_selection_step(cohort, name):
    train, test = cohort
    pipeline = fitted(name, train, select_features=None)
    assert pipeline.model_.named_steps["select"] == "passthrough"
    # The pipeline as it was before selection existed: blocks -> scale -> classifier, same seed.
    before = Pipeline([(step, clone(estimator)) for step, estimator in pipeline.model_.steps if step != "select"])
    before.fit(pipeline._table(train), three_classes(train))
    proba = np.zeros((len(test), 3))
    proba[:, before.classes_] = before.predict_proba(pipeline._table(test))
    np.testing.assert_array_equal(pipeline.predict_proba(test), 1.0 - proba[:, 0])


def test_select_features_is_checked(cohort):
    train, _ = cohort
    with pytest.raises(ValueError, match="select_features=8 but the classifier has only 7"):
        fitted("simclr_rf", train, select_features=8)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="select_features"):
            PIPELINES.create("simclr_rf", **{**SETTINGS["simclr_rf"], "select_features": bad})


def test_configs_keep_every_input_by_default():
    for name in ("simclr_rf", "simclr_mlp"):
        kwargs = OmegaConf.load(CONF_DIR / "classify" / "pipeline" / f"{name}.yaml").kwargs
        assert kwargs.select_features is None and kwargs.permutation_repeats >= 1


def test_one_class_training_part_gives_no_permutation_importance(cohort):
    train, _ = cohort
    malignant = train[train["malignant"] == 1]
    table = fitted("simclr_rf", malignant).feature_importance()
    assert table["permutation_importance"].isna().all() and table["impurity_importance"].notna().all()
