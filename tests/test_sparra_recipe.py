"""The pieces of SPARRA's default recipe: top-k of either sign, a minimum of kept nodes, loss scaling."""

import pytest
import torch
from torch_geometric.data import Batch, Data

from conftest import conf_values
from radiopath.models import AGGREGATORS, collate_patients
from radiopath.errors import ConfigError
from radiopath.models.pooling import TopKNodePooling


def pooling(score: str, ratio: float, min_nodes: int = 1) -> TopKNodePooling:
    pool = TopKNodePooling(2, ratio=ratio, min_nodes=min_nodes, score=score)
    with torch.no_grad():
        pool.weight.copy_(torch.tensor([1.0, 0.0]))  # score = feature 0
    return pool


def chain(values: list[float]) -> Data:
    """A path graph whose feature 0 holds ``values`` (feature 1 is noise)."""
    n = len(values)
    x = torch.stack([torch.tensor(values), torch.rand(n)], 1)
    edges = torch.tensor([list(range(n - 1)) + list(range(1, n)), list(range(1, n)) + list(range(n - 1))])
    return Data(x=x, edge_index=edges)


def test_abs_score_keeps_nodes_of_either_sign_linear_only_the_positive():
    graph = chain([0.1, -3.0, 0.2, 2.5, -0.3, 0.05, 0.15, -0.1])
    batch = torch.zeros(8, dtype=torch.long)
    _, _, _, kept_abs = pooling("abs", 0.25)(graph.x, graph.edge_index, batch)
    _, _, _, kept_linear = pooling("linear", 0.25)(graph.x, graph.edge_index, batch)
    assert set(kept_abs.tolist()) == {1, 3}           # -3.0 and 2.5
    assert set(kept_linear.tolist()) == {3, 2}        # 2.5 and 0.2: the negative shift is lost


def test_pooled_features_are_gated_and_edges_filtered():
    graph = chain([0.0, 2.0, 1.5, -0.5, 0.1])
    pooled, edge_index, graph_of, kept = pooling("abs", 0.4)(graph.x, graph.edge_index, torch.zeros(5, dtype=torch.long))
    assert kept.tolist() == [1, 2]                    # best first
    assert torch.allclose(pooled, graph.x[kept] * torch.tanh(graph.x[kept, :1].abs()))
    assert edge_index.tolist() == [[0, 1], [1, 0]]    # nodes 1-2 were adjacent, renumbered 0-1
    assert graph_of.tolist() == [0, 0]


def test_min_nodes_keeps_small_graphs_from_collapsing():
    graphs = Batch.from_data_list([chain(torch.randn(n).tolist()) for n in (40, 10, 3)])
    _, _, graph_of, _ = pooling("abs", 0.2, min_nodes=4)(graphs.x, graphs.edge_index, graphs.batch)
    # ceil(0.2 * 40) = 8; ceil(0.2 * 10) = 2 -> 4; a 3-node graph keeps all 3.
    assert torch.bincount(graph_of).tolist() == [8, 4, 3]
    _, _, graph_of, _ = pooling("abs", 0.2)(graphs.x, graphs.edge_index, graphs.batch)
    assert torch.bincount(graph_of).tolist() == [8, 2, 1]


def test_gated_score_keeps_the_requested_number_per_graph():
    pool = TopKNodePooling(2, ratio=0.5, min_nodes=2, score="gated")
    graphs = Batch.from_data_list([chain(torch.randn(n).tolist()) for n in (9, 2)])
    pooled, _, graph_of, kept = pool(graphs.x, graphs.edge_index, graphs.batch)
    assert torch.bincount(graph_of).tolist() == [5, 2]
    assert (graphs.batch[kept] == graph_of).all()
    pooled.sum().backward()
    assert pool.gate.score.weight.grad.abs().sum() > 0  # the score is trained through the gate


@pytest.mark.parametrize("bad, key", [
    (dict(ratio=0.0), "ratio"), (dict(ratio=1.5), "ratio"), (dict(ratio=-0.2), "ratio"), (dict(ratio=2), "ratio"),
    (dict(min_nodes=0), "min_nodes"), (dict(score="max"), "score"),
])
def test_bad_pooling_settings_are_refused(bad, key):
    settings = dict(ratio=0.5, min_nodes=1, score="abs") | bad
    with pytest.raises(ConfigError) as refused:
        TopKNodePooling(4, **settings)
    assert refused.value.key == key


@pytest.mark.parametrize("score", ["linear", "abs", "gated"])
@pytest.mark.parametrize("ratio", [1.0, 1])
def test_ratio_one_keeps_every_node(score, ratio):
    """A ratio is a fraction of each graph: 1 keeps all its nodes (PyG's TopKPooling read it as one node)."""
    torch.manual_seed(0)
    patients = [{"pathology": chain(torch.randn(n).tolist())} for n in (12, 7)]
    settings = conf_values("model/sparra_paper", hidden=8, attention_dim=4, ratio=ratio, score=score)
    model = AGGREGATORS.create("sparra", {"pathology": 2}, **settings).eval()
    importance = model(collate_patients(patients)).node_importance["pathology"]
    assert importance.shape == (19,) and (importance > 0).all()  # every node survived both poolings


def doubled(graph: Data) -> Data:
    """Two disjoint copies of ``graph`` as one graph: the same node distribution, twice the nodes."""
    n = graph.num_nodes
    return Data(x=torch.cat([graph.x, graph.x]),
                edge_index=torch.cat([graph.edge_index, graph.edge_index + n], 1))


@pytest.mark.parametrize("reduction, growth", [("sum", 2.0), ("mean", 1.0)])
def test_mean_reduction_keeps_the_variational_terms_independent_of_graph_size(reduction, growth):
    torch.manual_seed(0)
    graph = Data(x=torch.randn(32, 5), edge_index=torch.zeros(2, 0, dtype=torch.long))
    settings = conf_values("model/sparra_paper", hidden=8, attention_dim=4, dropout=0.0, ratio=0.5, min_nodes=1,
                           score="abs", reduction=reduction)
    model = AGGREGATORS.create("sparra", {"pathology": 5}, **settings).eval()
    small = model(collate_patients([{"pathology": graph}])).loss_terms
    large = model(collate_patients([{"pathology": doubled(graph)}])).loss_terms
    for term in ("kl", "recon"):
        assert large[term].item() == pytest.approx(growth * small[term].item(), rel=1e-5)


def test_recipe_defaults_load_and_build(compose_config):
    cfg = compose_config("train")
    kwargs = dict(cfg.model.kwargs)
    model = AGGREGATORS.create(cfg.model.name, {"pathology": 6, "radiology": 4}, **kwargs)
    assert cfg.model.name == "sparra" and kwargs["score"] in ("gated", "abs") and kwargs["min_nodes"] > 1
    assert kwargs["reduction"] == "mean"
    paper = compose_config("train", ["experiment=radiopathomics_sparra_paper"])
    assert paper.model.kwargs.reduction == "sum" and paper.model.kwargs.ratio == 0.2
    assert paper.training.epochs == 20 and paper.training.batch_size == 32 and paper.training.lr == 3e-4
    assert model.out_dim == 2 * kwargs["hidden"]
