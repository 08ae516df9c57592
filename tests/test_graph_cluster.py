"""The sparse hybrid clustering equals brute-force average linkage on the full matrix."""

import numpy as np
import pytest
from scipy.cluster import hierarchy
from scipy.spatial.distance import pdist, squareform
from sklearn.metrics import adjusted_rand_score

from radiopath.graphs import cluster
from radiopath.graphs.cluster import average_linkage_clusters, cluster_patches, hybrid_similarity


def brute_force_clusters(features, pos, radius, lambda_f, lambda_d, lambda_h):
    """The reference semantics: full condensed distance matrix + scipy average linkage."""
    spatial, feature = pdist(pos), pdist(features)
    similarity = np.exp(-lambda_f * feature) * np.exp(-lambda_d * spatial)
    distance = np.where(spatial < radius, 1.0 - similarity, 1.0)
    return hierarchy.fcluster(hierarchy.linkage(distance, method="average"), lambda_h, criterion="distance")


def tissue_like(n, dims, seed):
    """Patches on a jittered grid with a smooth feature field plus noise."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 20, size=(n, dims))
    field = np.sin(pos @ rng.normal(size=(dims, 3)) / 4)
    features = field @ rng.normal(size=(3, 16)) * 4 + rng.normal(size=(n, 16)) * 0.4
    return features, pos


@pytest.mark.parametrize("dims, seed", [(2, 0), (2, 1), (3, 2), (3, 3)])
def test_matches_brute_force_average_linkage(dims, seed):
    features, pos = tissue_like(500, dims, seed)
    params = dict(radius=3.0, lambda_f=0.1, lambda_d=0.2, lambda_h=0.8)
    expected = brute_force_clusters(features, pos, **params)
    labels = cluster_patches(features, pos, **params)
    assert len(np.unique(labels)) == len(np.unique(expected)) > 5
    assert adjusted_rand_score(expected, labels) == pytest.approx(1.0)


def test_similarity_is_product_of_feature_and_spatial_terms_within_radius():
    features, pos = tissue_like(200, 2, 4)
    i, j, s = hybrid_similarity(features, pos, radius=2.5, lambda_f=0.1, lambda_d=0.2)
    spatial = np.linalg.norm(pos[i] - pos[j], axis=1)
    feature = np.linalg.norm(features[i] - features[j], axis=1)
    assert (i < j).all() and (spatial < 2.5).all()
    np.testing.assert_allclose(s, np.exp(-0.1 * feature - 0.2 * spatial), rtol=1e-4)
    all_close = (pdist(pos) < 2.5).sum()
    assert len(i) == all_close


def test_pairs_outside_radius_never_merge():
    # Two identical-feature patches far apart stay separate; near ones merge.
    features = np.zeros((3, 4))
    pos = np.array([[0.0, 0.0], [0.5, 0.0], [100.0, 0.0]])
    labels = cluster_patches(features, pos, radius=5.0, lambda_f=1.0, lambda_d=0.01, lambda_h=0.8)
    assert labels[0] == labels[1] != labels[2]


def test_labels_are_numbered_by_first_patch_and_cover_all_items():
    labels = average_linkage_clusters(4, np.array([1]), np.array([3]), np.array([0.9]), 0.8)
    assert labels.tolist() == [0, 1, 2, 1]
    assert average_linkage_clusters(3, np.array([], int), np.array([], int), np.array([]), 0.8).tolist() == [0, 1, 2]


def average_linkage_between_clusters(distance, labels):
    """Mean pairwise distance between every two clusters (k, k), diagonal: within each cluster."""
    onehot = np.eye(labels.max() + 1)[labels]
    sizes = onehot.sum(0)
    total = onehot.T @ distance @ onehot
    pairs = np.outer(sizes, sizes)
    np.fill_diagonal(pairs, sizes * (sizes - 1))  # within: ordered pairs of distinct items
    return total / np.maximum(pairs, 1), sizes


@pytest.mark.parametrize("side, dims", [(40, 2), (12, 3)])
def test_exact_ties_give_a_valid_cut_in_few_rounds(monkeypatch, side, dims):
    # Identical features on an exact grid: every similarity ties with many others.
    pos = np.stack(np.meshgrid(*[np.arange(side)] * dims), -1).reshape(-1, dims).astype(float)
    features = np.zeros((len(pos), 8))
    params = dict(radius=2.5, lambda_f=1.0, lambda_d=0.2, lambda_h=0.8)
    rounds = []
    coalesce = cluster._coalesce
    monkeypatch.setattr(cluster, "_coalesce", lambda *a: rounds.append(1) or coalesce(*a))
    labels = cluster_patches(features, pos, **params)

    spatial = squareform(pdist(pos))
    distance = np.where(spatial < params["radius"], 1 - np.exp(-params["lambda_d"] * spatial), 1.0)
    linkage, sizes = average_linkage_between_clusters(distance, labels)
    between = linkage[~np.eye(len(sizes), dtype=bool)]
    within = np.diag(linkage)[sizes > 1]
    # The cut: no two clusters are within lambda_h of each other (else they would merge), and
    # every cluster's mean internal distance, a weighted mean of its merge heights, is <= lambda_h.
    assert between.min() > params["lambda_h"]
    assert within.max() <= params["lambda_h"] + 1e-12
    assert (sizes > 1).sum() > 10
    # The first-in-item-order tie-break needed 63 rounds on the 40 x 40 grid; the hash order about 13.
    assert len(rounds) <= 25


def test_pair_order_and_orientation_do_not_change_the_clusters():
    features, pos = tissue_like(400, 2, 5)
    params = dict(lambda_f=0.1, lambda_d=0.2)
    i, j, s = hybrid_similarity(features, pos, radius=3.0, **params)
    expected = cluster_patches(features, pos, radius=3.0, lambda_h=0.8, **params)
    shuffle = np.random.default_rng(0).permutation(len(i))
    flipped = shuffle % 2 == 0
    a, b = np.where(flipped, j[shuffle], i[shuffle]), np.where(flipped, i[shuffle], j[shuffle])
    assert average_linkage_clusters(len(pos), a, b, s[shuffle], 0.8).tolist() == expected.tolist()


@pytest.mark.parametrize("batch_elements", [1, 2000, 2**24])
def test_pair_feature_distances_in_any_batch_size(batch_elements):
    features, pos = tissue_like(300, 2, 6)
    i, j, _ = cluster.neighbour_pairs(pos, 2.0)
    got = cluster.pair_feature_distances(features, pos, i, j, cell=2.0, batch_elements=batch_elements)
    np.testing.assert_allclose(got, np.linalg.norm(features[i] - features[j], axis=1), rtol=1e-5, atol=1e-4)
