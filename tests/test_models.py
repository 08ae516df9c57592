"""Aggregators (Mean, ABMIL, SPARRA), patient collation and the Normal-Gamma terms."""

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch.distributions import Gamma, Normal, kl_divergence
from torch_geometric.data import Data

from conftest import conf_values
from radiopath.models import AGGREGATORS, collate_patients, cox_partial_nll
from radiopath.models.variational import expected_normal_kl, gamma_kl, gamma_posterior
from radiopath.registry import UnknownNameError

DIMS = {"pathology": 6, "radiology": 4}


def chain_graph(n: int, dim: int, seed: int) -> Data:
    gen = torch.Generator().manual_seed(seed)
    ends = torch.stack([torch.arange(n - 1), torch.arange(1, n)])
    return Data(x=torch.randn(n, dim, generator=gen), edge_index=torch.cat([ends, ends.flip(0)], 1),
                pos=torch.rand(n, 2, generator=gen))


@pytest.fixture
def patients():
    """Patient 0 has both modalities, 1 only pathology, 2 only radiology."""
    return [
        {"pathology": chain_graph(40, 6, 0), "radiology": chain_graph(25, 4, 1)},
        {"pathology": chain_graph(30, 6, 2)},
        {"radiology": chain_graph(35, 4, 3)},
    ]


def block(vector, m, widths):
    start = sum(list(widths.values())[: list(widths).index(m)])
    return vector[:, start:start + widths[m]]


def per_group_sum(values, groups, n):
    return torch.zeros(n).index_add(0, groups, values)


# --- Normal-Gamma terms ---------------------------------------------------------------

def test_gamma_posterior_is_eq4():
    mu, var = torch.tensor([0.0, 1.5, -2.0]), torch.tensor([0.1, 0.5, 2.0])
    alpha, beta = gamma_posterior(mu, var, mu0=0.5, lambda0=2.0, alpha0=2.0, beta0=0.01)
    torch.testing.assert_close(alpha, torch.full((3,), 5.0))
    torch.testing.assert_close(beta, 0.02 + 2.0 * ((mu - 0.5) ** 2 + var))


def test_gamma_kl_matches_torch_distributions():
    alpha_q, beta_q = torch.tensor([5.0, 0.7, 3.0]), torch.tensor([0.02, 4.0, 1.5])
    expected = kl_divergence(Gamma(alpha_q, beta_q), Gamma(torch.tensor(2.0), torch.tensor(0.01)))
    torch.testing.assert_close(gamma_kl(alpha_q, beta_q, 2.0, 0.01), expected)


@pytest.mark.parametrize("mu, var, alpha, beta, mu0, lambda0",
                         [(0.3, 0.2, 5.0, 0.5, 0.0, 1.0), (-1.2, 1.5, 2.5, 3.0, 0.4, 2.0)])
def test_expected_normal_kl_integrates_the_normal_kl(mu, var, alpha, beta, mu0, lambda0):
    def kl_at(v):
        prior = Normal(torch.tensor(mu0, dtype=torch.float64), torch.tensor(1 / np.sqrt(lambda0 * v)))
        return kl_divergence(Normal(torch.tensor(mu, dtype=torch.float64),
                                    torch.tensor(np.sqrt(var))), prior).item()

    density = stats.gamma(a=alpha, scale=1 / beta).pdf
    numeric, _ = integrate.quad(lambda v: density(v) * kl_at(v), 0, np.inf, limit=200)
    closed = expected_normal_kl(*(torch.tensor(a, dtype=torch.float64) for a in (mu, var, alpha, beta)),
                                mu0=mu0, lambda0=lambda0)
    assert closed.item() == pytest.approx(numeric, rel=1e-6)


# --- collation and the simple aggregators ---------------------------------------------

def test_collate_marks_patients_and_leaves_inputs_alone(patients):
    batch = collate_patients(patients)
    assert batch.num_patients == 3
    assert batch.graphs["pathology"].patient.tolist() == [0, 1]
    assert batch.graphs["radiology"].patient.tolist() == [0, 2]
    assert all("patient" not in g for p in patients for g in p.values())


def test_mean_aggregator(patients):
    model = AGGREGATORS.create("mean", DIMS)
    out = model(collate_patients(patients))
    assert not model.trainable and not list(model.parameters())
    assert out.vector.shape == (3, model.out_dim) == (3, 10)
    torch.testing.assert_close(block(out.vector, "pathology", DIMS)[1], patients[1]["pathology"].x.mean(0))
    torch.testing.assert_close(block(out.vector, "radiology", DIMS)[0], patients[0]["radiology"].x.mean(0))
    assert torch.equal(block(out.vector, "radiology", DIMS)[1], torch.zeros(4))
    assert torch.isnan(out.risk).all() and out.risk.shape == (3,)
    assert out.loss_terms == {} and out.node_importance == {}


def test_abmil_attention_sums_to_one_per_patient_and_modality(patients):
    torch.manual_seed(0)
    model = AGGREGATORS.create("abmil", DIMS, **conf_values("model/abmil", hidden=8, attention_dim=4))
    batch = collate_patients(patients)
    out = model(batch)
    for m, g in batch.graphs.items():
        attention = out.node_importance[m]
        assert attention.shape == (g.num_nodes,) and (attention > 0).all()
        torch.testing.assert_close(per_group_sum(attention, g.batch, g.num_graphs), torch.ones(g.num_graphs))
    widths = {m: 8 for m in DIMS}
    assert torch.equal(block(out.vector, "radiology", widths)[1], torch.zeros(8))
    assert torch.equal(block(out.vector, "pathology", widths)[2], torch.zeros(8))
    assert out.loss_terms == {} and out.risk.grad_fn is not None


def test_unknown_aggregator_rejected():
    with pytest.raises(UnknownNameError, match="unknown aggregator 'transformer'; known: abmil, mean, sparra"):
        AGGREGATORS.create("transformer", DIMS)


# --- SPARRA ---------------------------------------------------------------------------

def sparra(**kwargs):
    """The paper's SPARRA, narrow, with ``kwargs`` changed."""
    torch.manual_seed(0)
    return AGGREGATORS.create("sparra", DIMS, **conf_values("model/sparra_paper", hidden=8, attention_dim=4, **kwargs))


@pytest.mark.parametrize("conv", ["gcn", "gin", "gat"])
def test_sparra_weights_sum_to_one_per_patient(patients, conv):
    model = sparra(conv=conv)
    batch = collate_patients(patients)
    out = model(batch)
    totals = sum(per_group_sum(out.node_importance[m], g.patient[g.batch], 3) for m, g in batch.graphs.items())
    torch.testing.assert_close(totals, torch.ones(3))
    assert out.vector.shape == (3, model.out_dim) == (3, 16)
    assert set(out.loss_terms) == {"kl", "recon"}


def test_sparra_modality_normalisation(patients):
    batch = collate_patients(patients)
    out = sparra(weight_norm="modality")(batch)
    for m, g in batch.graphs.items():
        torch.testing.assert_close(per_group_sum(out.node_importance[m], g.batch, g.num_graphs),
                                   torch.ones(g.num_graphs))


def test_sparra_size_weights_are_per_node_of_the_graph_not_shares(patients):
    # weight_norm="size" keeps amount: each pooled node's weight is divided by its graph's size,
    # not by the patient's total, so a one-graph patient's weights are the shares times total/size
    batch = collate_patients(patients)
    shares, sizes = sparra(ratio=1.0)(batch), sparra(ratio=1.0, weight_norm="size")(batch)
    for m, patient in (("pathology", 1), ("radiology", 2)):
        g = batch.graphs[m]
        nodes = g.patient[g.batch] == patient
        per_node = sizes.node_importance[m][nodes]
        assert per_node.sum() != pytest.approx(1.0)
        torch.testing.assert_close(per_node / per_node.sum(), shares.node_importance[m][nodes])
        torch.testing.assert_close(per_node * int(nodes.sum()), shares.node_importance[m][nodes]
                                   * (per_node * int(nodes.sum())).sum())


def test_sparra_missing_modality_gives_zero_block(patients):
    model = sparra()
    out = model(collate_patients(patients))
    widths = {m: 8 for m in DIMS}
    assert torch.equal(block(out.vector, "radiology", widths)[1], torch.zeros(8))
    assert torch.equal(block(out.vector, "pathology", widths)[2], torch.zeros(8))
    assert block(out.vector, "pathology", widths)[1].abs().sum() > 0
    # A modality absent from the whole batch is a zero block too.
    only_pathology = model(collate_patients([{"pathology": p["pathology"]} for p in patients[:2]]))
    assert torch.equal(block(only_pathology.vector, "radiology", widths), torch.zeros(2, 8))
    assert set(only_pathology.node_importance) == {"pathology"}


def test_sparra_importance_lands_on_the_nodes_topk_keeps():
    """No edges and identity weights: both top-k layers rank nodes by feature 0."""
    dims = {"pathology": 3, "radiology": 3}
    settings = conf_values("model/sparra_paper", hidden=3, attention_dim=2, dropout=0.0,
                           ratio={"pathology": 0.2, "radiology": 0.25})
    model = AGGREGATORS.create("sparra", dims, **settings).eval()
    with torch.no_grad():
        for branch in model.branches.values():
            branch.encoder[0].weight.copy_(torch.eye(3))
            branch.encoder[0].bias.zero_()
            for conv, pool in zip(branch.convs, branch.pools):
                conv.lin.weight.copy_(torch.eye(3))
                conv.bias.zero_()
                pool.weight.copy_(torch.tensor([1.0, 0.0, 0.0]))
    gen = torch.Generator().manual_seed(5)

    def graph(n):  # feature 0 a shuffled ladder of distinct positive values
        x = torch.rand(n, 3, generator=gen)
        x[:, 0] = (torch.randperm(n, generator=gen) + 1.0) / n
        return Data(x=x, edge_index=torch.zeros(2, 0, dtype=torch.long))

    patients = [{"pathology": graph(50), "radiology": graph(40)}, {"pathology": graph(30)}]
    batch = collate_patients(patients)
    out = model(batch)
    kept = {"pathology": [2, 2], "radiology": [3]}  # ceil(0.2 ceil(0.2 n)), ceil(0.25 ceil(0.25 n))
    for m, g in batch.graphs.items():
        importance = out.node_importance[m]
        for graph_index, k in enumerate(kept[m]):
            nodes = (g.batch == graph_index).nonzero().squeeze(1)
            top = set(nodes[g.x[nodes, 0].argsort(descending=True)[:k]].tolist())
            assert set(nodes[importance[nodes] > 0].tolist()) == top
    both = out.node_importance["pathology"][batch.graphs["pathology"].batch == 0].sum() \
        + out.node_importance["radiology"].sum()
    assert both.item() == pytest.approx(1.0)


def test_sparra_gradients_reach_encoders_and_decoders(patients):
    model = sparra().train()
    out = model(collate_patients(patients))
    out.loss_terms["recon"].backward(retain_graph=True)
    # The reconstruction alone trains the encoder: through the sample s, not only the decoder.
    for m in DIMS:
        assert model.branches[m].encoder[0].weight.grad.abs().sum() > 0
        assert model.decoders[m].out.weight.grad.abs().sum() > 0
    model.zero_grad()
    loss = cox_partial_nll(out.risk, torch.tensor([3.0, 1.0, 2.0]), torch.tensor([1, 1, 0])) \
        + sum(out.loss_terms.values())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_sparra_gamma_kl_adds_the_second_term(patients):
    batch = collate_patients(patients)
    with_gamma = sparra(gamma_kl=True).eval()(batch).loss_terms["kl"]
    without = sparra().eval()(batch).loss_terms["kl"]
    assert with_gamma > without


def test_sparra_eval_is_deterministic_and_training_samples(patients):
    batch = collate_patients(patients)
    model = sparra().eval()
    first, second = model(batch), model(batch)
    torch.testing.assert_close(first.risk, second.risk, rtol=0, atol=0)
    torch.testing.assert_close(first.loss_terms["recon"], second.loss_terms["recon"], rtol=0, atol=0)
    model.train()
    torch.manual_seed(1)
    a = model(batch).loss_terms["recon"]
    torch.manual_seed(1)
    b = model(batch).loss_terms["recon"]
    torch.manual_seed(2)
    c = model(batch).loss_terms["recon"]
    assert a.item() == b.item() != c.item()


@pytest.mark.parametrize("name", ["mean", "abmil", "sparra"])
def test_batch_without_the_models_modalities_rejected(patients, name):
    model = AGGREGATORS.create(name, {"pathology": 6}, **conf_values(f"model/{name}"))
    with pytest.raises(ValueError, match="no graph"):
        model(collate_patients([{"radiology": patients[2]["radiology"]}]))


@pytest.mark.parametrize("conv", ["gcn", "gin"])
def test_decoder_squared_error_equals_the_error_of_the_decoded_features(conv):
    """The expanded form SPARRA's reconstruction uses: same values and gradients as decoding every feature."""
    from radiopath.models.sparra import GraphDecoder

    torch.manual_seed(0)
    decoder = GraphDecoder(8, 64, conv)
    n = 40
    sample = torch.randn(n, requires_grad=True)
    edges = torch.randint(0, n, (2, 160))
    edges = edges[:, edges[0] != edges[1]]
    target = torch.randn(n, 64) * 3 + 1
    direct = (target - decoder(sample, edges)).pow(2).sum(1)
    expanded = decoder.squared_error(sample, edges, target)
    torch.testing.assert_close(expanded, direct, rtol=1e-4, atol=1e-3)
    inputs = [sample, *decoder.parameters()]
    for a, b in zip(torch.autograd.grad(direct.sum(), inputs), torch.autograd.grad(expanded.sum(), inputs)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-3)
