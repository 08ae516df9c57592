import numpy as np
import pytest
import torch
from scipy.spatial import Delaunay

from radiopath.encoders.features import PatchFeatures
from radiopath.graphs.build import build_graph
from radiopath.graphs.edges import delaunay_edges, knn_edges, radius_edges
from radiopath.graphs.io import load_graph, load_patient, save_graph
from radiopath.layout import graph_path


def undirected(edge_index):
    return {tuple(sorted(pair)) for pair in edge_index.T.tolist()}


def assert_symmetric_without_self_loops(edge_index):
    pairs = set(map(tuple, edge_index.T.tolist()))
    assert all((b, a) in pairs for a, b in pairs)
    assert all(a != b for a, b in pairs)
    assert edge_index.dtype == np.int64


@pytest.mark.parametrize("dims", [2, 3])
def test_delaunay_edges_are_the_triangulation_minus_long_edges(dims):
    pos = np.random.default_rng(dims).uniform(0, 10, size=(60, dims))
    edge_index = delaunay_edges(pos, max_length=3.0)
    assert_symmetric_without_self_loops(edge_index)
    expected = set()
    for simplex in Delaunay(pos).simplices:
        for a in simplex:
            for b in simplex:
                if a < b and np.linalg.norm(pos[a] - pos[b]) <= 3.0:
                    expected.add((int(a), int(b)))
    assert undirected(edge_index) == expected


def test_degenerate_layouts_fall_back_to_radius_edges():
    line = np.c_[np.arange(5.0), np.zeros(5)]
    assert undirected(delaunay_edges(line, max_length=1.5)) == {(0, 1), (1, 2), (2, 3), (3, 4)}
    assert delaunay_edges(np.zeros((1, 3)), max_length=1.0).shape == (2, 0)


def test_radius_and_knn_edges():
    pos = np.array([[0.0, 0], [1, 0], [3, 0], [10, 0]])
    assert undirected(radius_edges(pos, 2.0)) == {(0, 1), (1, 2)}
    knn = knn_edges(pos, 1)
    assert_symmetric_without_self_loops(knn)
    assert undirected(knn) == {(0, 1), (1, 2), (2, 3)}


def make_patches(modality="pathology"):
    rng = np.random.default_rng(0)
    if modality == "pathology":
        grid = np.stack(np.meshgrid(np.arange(12), np.arange(12)), -1).reshape(-1, 2) * 512
        features = np.where(grid[:, :1] < 6 * 512, 0.0, 50.0) + rng.normal(size=(144, 8))
        return PatchFeatures("p1", "pathology", "test", features, grid, (512, 512), level0_mpp=0.25)
    grid = np.stack(np.meshgrid(np.arange(6), np.arange(6), np.arange(6)), -1).reshape(-1, 3) * 1.0
    features = np.where(grid[:, :1] < 3, 0.0, 50.0) + rng.normal(size=(216, 8))
    return PatchFeatures("p1", "radiology", "test", features, grid, (1, 1, 1))


@pytest.mark.parametrize("modality, params", [
    ("pathology", dict(radius=1000, lambda_f=5e-2, lambda_d=6e-3, lambda_h=0.8, connectivity=2000)),
    ("radiology", dict(radius=4, lambda_f=0.1, lambda_d=0.2, lambda_h=0.8, connectivity=8)),
])
def test_graph_file_round_trip(tmp_path, modality, params):
    patches = make_patches(modality)
    graph = build_graph(patches, **params)
    assert graph.x.dtype == torch.float32 and graph.pos.dtype == torch.float32
    assert graph.edge_index.dtype == torch.int64 and graph.assignment.dtype == torch.int64
    assert graph.assignment.shape == (len(patches.features),)
    assert graph.pos.shape == (graph.num_nodes, 2 if modality == "pathology" else 3)
    # Node feature = mean of its patches; two feature halves never share a node.
    for node in range(graph.num_nodes):
        members = (graph.assignment == node).numpy()
        np.testing.assert_allclose(graph.x[node].numpy(), patches.features[members].mean(0), rtol=1e-4, atol=1e-4)
        assert len(np.unique(patches.features[members, 0] > 25)) == 1

    path = graph_path(tmp_path, modality, "p1")
    save_graph(graph, path)
    loaded = load_graph(path)
    for key in ("x", "edge_index", "pos", "assignment"):
        assert torch.equal(loaded[key], graph[key])
    assert loaded.case_id == "p1"

    patient = load_patient(tmp_path, "p1")
    assert patient.node_types == [modality]
    assert torch.equal(patient[modality].x, graph.x)


def test_node_positions_are_physical_patch_centres():
    patches = make_patches("pathology")
    graph = build_graph(patches, radius=1000, lambda_f=5e-2, lambda_d=6e-3, lambda_h=0.8, connectivity=2000)
    centres_um = (patches.coords + 256) * 0.25  # 512-px tiles' top-left corners at 0.25 µm/px
    for node in range(graph.num_nodes):
        members = (graph.assignment == node).numpy()
        np.testing.assert_allclose(graph.pos[node].numpy(), centres_um[members].mean(0), rtol=1e-6)


def test_load_patient_without_graphs_names_the_case(tmp_path):
    with pytest.raises(FileNotFoundError, match="nobody"):
        load_patient(tmp_path, "nobody")
