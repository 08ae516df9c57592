"""Graph files record their construction settings; training refuses a modality built with several."""

import logging

import numpy as np
import pandas as pd
import pytest

from radiopath.encoders.features import PatchFeatures
from radiopath.graphs.build import build_graph, construction_params
from radiopath.graphs.io import build_params, load_graph, save_graph
from radiopath.layout import graph_path
from radiopath.training.cohort import load_graph_cohort

CT = dict(radius=4.0, lambda_f=0.1, lambda_d=0.2, lambda_h=0.8, edges="delaunay", connectivity=8.0, k=8)
SLIDE = dict(radius=1000.0, lambda_f=1e-3, lambda_d=6e-3, lambda_h=0.8, edges="delaunay", connectivity=2000.0, k=8)


def patches(case_id, modality, seed):
    rng = np.random.default_rng(seed)
    if modality == "pathology":
        grid = np.stack(np.meshgrid(np.arange(5), np.arange(5)), -1).reshape(-1, 2) * 512
        return PatchFeatures(case_id, modality, "test", rng.normal(size=(25, 4)), grid, (512, 512), level0_mpp=0.25)
    grid = np.stack(np.meshgrid(np.arange(3), np.arange(3), np.arange(3)), -1).reshape(-1, 3) * 2.0
    return PatchFeatures(case_id, modality, "test", rng.normal(size=(27, 4)), grid, (2, 2, 2))


def write_cohort(root, settings_of_case, modality="radiology"):
    """A manifest and one graph per case built with ``settings_of_case[case_id]``."""
    for seed, (case_id, settings) in enumerate(settings_of_case.items()):
        save_graph(build_graph(patches(case_id, modality, seed), **settings), graph_path(root / "graphs", modality,
                                                                                          case_id))
    manifest = root / "manifest.csv"
    pd.DataFrame({"case_id": list(settings_of_case), "os_time": 100.0, "os_event": 1}).to_csv(manifest, index=False)
    return manifest


def strip_settings(root, case_id, modality="radiology"):
    """Make a case's graph file look like one written before graphs recorded their settings."""
    path = graph_path(root / "graphs", modality, case_id)
    graph = load_graph(path)
    del graph.build_params
    save_graph(graph, path)


def test_a_graph_file_records_its_settings_and_still_loads_weights_only(tmp_path):
    path = tmp_path / "g.pt"
    save_graph(build_graph(patches("a", "pathology", 0), **{**SLIDE, "radius": 1000}), path)
    recorded = build_params(load_graph(path))  # load_graph is torch.load(weights_only=True)
    assert recorded == construction_params(**SLIDE)
    assert recorded["radius"] == 1000.0 and isinstance(recorded["radius"], float)
    assert recorded["connectivity"] == 2000.0 and recorded["k"] is None  # k does not shape Delaunay edges


def test_only_the_settings_that_shape_the_graph_are_compared():
    assert construction_params(**{**CT, "k": 16}) == construction_params(**CT)
    knn = {**CT, "edges": "knn"}
    assert construction_params(**{**knn, "connectivity": 99.0}) == construction_params(**knn)
    assert construction_params(**{**knn, "k": 4}) != construction_params(**knn)
    with pytest.raises(ValueError, match="edges must be"):
        construction_params(**{**CT, "edges": "gabriel"})


def test_training_refuses_graphs_of_one_modality_built_with_different_settings(tmp_path, caplog):
    other = {**CT, "lambda_f": 0.5, "radius": 4}  # radius 4 == 4.0: not a difference
    manifest = write_cohort(tmp_path, {"a": CT, "b": CT, "c": other})
    with pytest.raises(ValueError) as refused:
        load_graph_cohort(manifest, tmp_path / "graphs", ["radiology"], allow_mixed_graphs=False)
    message = str(refused.value)
    assert "radiology graphs" in message and "different lambda_f:" in message and "radius" not in message
    assert "lambda_f=0.1 (2 cases: a, b)" in message and "lambda_f=0.5 (1 case: c)" in message
    assert "allow_mixed_graphs=true" in message

    with caplog.at_level(logging.WARNING, logger="radiopath.training.cohort"):
        cohort = load_graph_cohort(manifest, tmp_path / "graphs", ["radiology"], allow_mixed_graphs=True)
    assert cohort.case_ids == ["a", "b", "c"] and "different lambda_f" in caplog.text


def test_old_graph_files_without_settings_mix_with_recorded_ones_only_when_allowed(tmp_path):
    manifest = write_cohort(tmp_path, {"a": CT, "b": CT, "c": CT})
    strip_settings(tmp_path, "c")
    with pytest.raises(ValueError, match=r"without recorded build settings.*\(1 case: c\).*\(2 cases: a, b\)"
                                         r".*rebuild them"):
        load_graph_cohort(manifest, tmp_path / "graphs", ["radiology"], allow_mixed_graphs=False)
    assert len(load_graph_cohort(manifest, tmp_path / "graphs", ["radiology"], allow_mixed_graphs=True).patients) == 3

    for case_id in ("a", "b"):
        strip_settings(tmp_path, case_id)
    old = load_graph_cohort(manifest, tmp_path / "graphs", ["radiology"], allow_mixed_graphs=False)
    assert old.case_ids == ["a", "b", "c"]  # all unknown alike: a cohort from before still trains


def test_each_modality_may_have_its_own_settings(tmp_path):
    manifest = write_cohort(tmp_path, {"a": CT, "b": CT})
    write_cohort(tmp_path, {"a": SLIDE, "b": SLIDE}, modality="pathology")
    cohort = load_graph_cohort(manifest, tmp_path / "graphs", ["radiology", "pathology"], allow_mixed_graphs=False)
    assert cohort.modality_counts() == {"radiology": 2, "pathology": 2}


def test_train_config_refuses_mixed_graphs_by_default(compose_config):
    assert compose_config("train").allow_mixed_graphs is False
