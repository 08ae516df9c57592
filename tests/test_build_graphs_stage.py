"""The build_graphs stage on ready-made patch features: resume, failures, statistics."""

import numpy as np
import pytest

from radiopath.encoders.bags import write_bag
from radiopath.encoders.features import PatchFeatures
from radiopath.graphs import load_graph
from radiopath.graphs.stage import build_modality_graphs, graph_statistics
from radiopath.layout import bag_path, features_path, graph_path


def write_features(features_dir, case_id, seed):
    rng = np.random.default_rng(seed)
    coords = np.stack(np.meshgrid(np.arange(10), np.arange(8)), -1).reshape(-1, 2) * 512
    PatchFeatures(case_id, "pathology", "hipt", rng.normal(size=(80, 6)), coords, (512, 512), level0_mpp=0.25).save(
        features_path(features_dir, "pathology", "hipt", case_id)
    )


@pytest.fixture
def stage_config(compose_config, tmp_path):
    return compose_config(
        "build_graphs",
        [f"data.features_dir={tmp_path / 'features'}", f"output_dir={tmp_path / 'graphs'}", "encoder/pathology=hipt"],
    )


def test_builds_resumes_and_reports_failures(stage_config, tmp_path):
    features_dir = tmp_path / "features"
    for i, case_id in enumerate(["a", "b"]):
        write_features(features_dir, case_id, i)
    corrupt = features_path(features_dir, "pathology", "hipt", "c")
    corrupt.write_bytes(b"not a torch file")

    summary = build_modality_graphs(stage_config, ["a", "b", "c", "missing"], "pathology")
    assert summary.done == ["a", "b"]
    failed = dict(summary.failed)
    assert set(failed) == {"c", "missing"}
    assert "no pathology patch features" in failed["missing"]
    assert (tmp_path / "graphs" / "pathology" / "failures.csv").is_file()

    graph = load_graph(graph_path(tmp_path / "graphs", "pathology", "a"))
    assert graph.case_id == "a" and graph.assignment.shape == (80,)
    assert "2 graphs" in graph_statistics(tmp_path / "graphs", "pathology", ["a", "b"])

    # A rerun skips finished cases; overwrite=true rebuilds them.
    again = build_modality_graphs(stage_config, ["a", "b"], "pathology")
    assert again.skipped == ["a", "b"] and again.done == []
    stage_config.overwrite = True
    assert build_modality_graphs(stage_config, ["a"], "pathology").done == ["a"]


def test_reads_slide_features_stored_as_hdf5_bags(stage_config, tmp_path):
    rng = np.random.default_rng(3)
    coords = np.stack(np.meshgrid(np.arange(10), np.arange(8)), -1).reshape(-1, 2) * 512
    patches = PatchFeatures("h", "pathology", "hipt", rng.normal(size=(80, 6)), coords, (512, 512), level0_mpp=0.25)
    write_bag(patches, bag_path(tmp_path / "features", "pathology", "hipt", "h"), tile_size=256, tile_mpp=0.5)
    patches.save(features_path(tmp_path / "features", "pathology", "hipt", "p"))

    assert build_modality_graphs(stage_config, ["h", "p"], "pathology").done == ["h", "p"]
    from_bag, from_pt = (load_graph(graph_path(tmp_path / "graphs", "pathology", c)) for c in ("h", "p"))
    assert np.array_equal(from_bag.pos.numpy(), from_pt.pos.numpy())
    assert np.array_equal(from_bag.assignment.numpy(), from_pt.assignment.numpy())
