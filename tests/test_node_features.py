"""Node-feature preprocessing (radiopath.training.scaling.NodeScaler) against numpy and scikit-learn."""

import logging

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from torch_geometric.data import Data

from conftest import conf_values
from radiopath.errors import ConfigError
from radiopath.models import AGGREGATORS, collate_patients
from radiopath.training.cohort import Patient
from radiopath.training.scaling import NodeScaler
from radiopath.training.trainer import TrainSettings, predict


def node_scaler(**settings) -> NodeScaler:
    """An unfitted scaler with ``node_features`` of conf/train.yaml, ``settings`` changed."""
    return NodeScaler(**conf_values("node_features", **settings))


def patients(n=6, width=5, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = rng.normal(size=(int(rng.integers(20, 40)), width)) + rng.normal(size=width) * 3  # per-graph offset
        x[:, 1] *= 4.0  # the widest feature
        graph = Data(x=torch.tensor(x, dtype=torch.float32), edge_index=torch.zeros(2, 0, dtype=torch.long))
        out.append(Patient(case_id=f"p{i}", graphs={"pathology": graph}, time=100.0 + i, event=i % 2))
    return out


def test_graph_centring_and_principal_axes_match_numpy_and_sklearn():
    cohort = patients()
    scaler = node_scaler(center="graph", components=3).fit(cohort)
    centred = [p.graphs["pathology"].x.double().numpy() for p in cohort]
    centred = [x - np.sort(x, axis=0)[(len(x) - 1) // 2] for x in centred]  # torch's median: the lower middle
    nodes = np.concatenate(centred)
    z = (nodes - nodes.mean(0)) / nodes.std(0)
    pca = PCA(n_components=3).fit(z)
    ours = torch.cat([scaler.transform("pathology", p.graphs["pathology"].x) for p in cohort]).double().numpy()
    reference = z @ pca.components_.T
    signs = np.sign((ours * reference).sum(0))  # an axis is defined up to its sign
    np.testing.assert_allclose(ours, reference * signs, atol=1e-4)
    # not whitened: each axis keeps its variance, largest first
    np.testing.assert_allclose(ours.var(0), pca.explained_variance_ * (len(z) - 1) / len(z), rtol=1e-4)
    assert scaler.widths() == {"pathology": 3} and scaler.out_dims({"pathology": 5}) == {"pathology": 3}


def test_graph_centring_removes_a_shared_offset():
    cohort = patients()
    scaler = node_scaler(center="graph").fit(cohort)
    shifted = cohort[0].graphs["pathology"].x + 7.0
    torch.testing.assert_close(scaler.transform("pathology", shifted),
                               scaler.transform("pathology", cohort[0].graphs["pathology"].x))


def test_axes_do_not_depend_on_the_order_of_the_patients():
    cohort = patients()
    a = node_scaler(components=2).fit(cohort).axes_["pathology"]
    b = node_scaler(components=2).fit(cohort[::-1]).axes_["pathology"]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)  # signs fixed too


def test_collated_batch_has_the_reduced_width():
    cohort = patients()
    scaler = node_scaler(center="graph", components=2).fit(cohort)
    batch = collate_patients([p.graphs for p in cohort], transform=scaler.transform, widths=scaler.widths())
    expected = torch.cat([scaler.transform("pathology", p.graphs["pathology"].x) for p in cohort])
    torch.testing.assert_close(batch.graphs["pathology"].x, expected)


@pytest.mark.parametrize("settings, key", [
    ({"center": "slide"}, "node_features.center"),
    ({"components": 0}, "node_features.components"),
    ({"components": 2.5}, "node_features.components"),
    ({"components": True}, "node_features.components"),
])
def test_bad_settings_fail_naming_the_key(settings, key):
    with pytest.raises(ConfigError) as refused:
        node_scaler(**settings)
    assert refused.value.key == key


def test_a_bad_setting_stops_training_before_it_starts(compose_config, tmp_path):
    from radiopath.training.stage import run_training
    from test_training import toy_cohort, train_config

    cfg = train_config(compose_config, tmp_path, toy_cohort(tmp_path, n=10), "node_features.components=-1")
    with pytest.raises(ValueError, match="node_features.components"):
        run_training(cfg)
    assert not (tmp_path / "run").exists()


def test_more_components_than_features_keeps_them_all_rotated():
    cohort = patients()
    scaler = node_scaler(components=6).fit(cohort)
    assert scaler.widths() == {"pathology": 5}
    x = cohort[0].graphs["pathology"].x
    plain = node_scaler().fit(cohort).transform("pathology", x)
    torch.testing.assert_close(scaler.transform("pathology", x) @ scaler.axes_["pathology"].T, plain,
                               atol=1e-5, rtol=1e-4)


def test_a_modality_only_test_patients_have_passes_unscaled_with_one_warning(caplog):
    """A fold whose only radiology graphs are among its test patients: the scaler never saw radiology."""
    train = patients()  # pathology only
    scaler = node_scaler(components=2).fit(train)
    rng = torch.Generator().manual_seed(1)
    test = [Patient(f"t{i}", 50.0 + i, i % 2, {"pathology": train[i].graphs["pathology"],
                                               "radiology": Data(x=torch.randn(9 + i, 4, generator=rng),
                                                                 edge_index=torch.zeros(2, 0, dtype=torch.long))})
            for i in range(3)]
    in_dims = scaler.out_dims({"pathology": 5, "radiology": 4})
    assert in_dims == {"pathology": 2, "radiology": 4}
    with caplog.at_level(logging.WARNING, logger="radiopath.training.scaling"):
        batch = collate_patients([p.graphs for p in test], transform=scaler.transform, widths=scaler.widths())
        torch.manual_seed(0)
        model = AGGREGATORS.create("abmil", in_dims, **conf_values("model/abmil", hidden=8, attention_dim=4))
        risk, vectors, _ = predict(model, test, scaler, TrainSettings(**conf_values("training")), torch.device("cpu"))
    torch.testing.assert_close(batch.graphs["radiology"].x, torch.cat([p.graphs["radiology"].x for p in test]),
                               rtol=0, atol=0)
    assert batch.graphs["pathology"].x.shape[1] == 2  # the fitted modality is still reduced
    assert np.isfinite(risk).all() and vectors.shape == (3, 16)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "radiology" in warnings[0]
