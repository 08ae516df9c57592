"""Training speed-ups change no result: sparse GCN propagation, buffered collation, streaming scaler, warm-up."""

import copy

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GCNConv

import radiopath.models.layers as layers
from conftest import conf_values
from radiopath.graphs.edges import delaunay_edges
from radiopath.models import AGGREGATORS, collate_patients, cox_partial_nll
from radiopath.models.batch import CollateCache, PatientBatch
from radiopath.models.layers import SparseGCNConv, gcn_adjacency
from radiopath.training.cohort import Patient
from radiopath.training.scaling import NodeScaler
from radiopath.training.trainer import TrainSettings, fit, predict, term_weight

DIMS = {"pathology": 12, "radiology": 6}


def graph(rng: np.random.Generator, n: int, dim: int, shift: float = 3.0) -> Data:
    pos = rng.uniform(0, 1, size=(n, 2))
    x = rng.normal(shift, 2.0, size=(n, dim)).astype(np.float32)  # off-centre: standardisation matters
    return Data(x=torch.from_numpy(x), edge_index=torch.from_numpy(delaunay_edges(pos, 0.5)), num_nodes=n)


@pytest.fixture
def cohort():
    rng = np.random.default_rng(0)
    patients = []
    for i in range(24):
        graphs = {"pathology": graph(rng, int(rng.integers(30, 60)), 12)}
        if i % 5:  # some patients without CT
            graphs["radiology"] = graph(rng, int(rng.integers(15, 30)), 6)
        patients.append(Patient(f"p{i}", float(rng.exponential(100) + 1), int(rng.random() < 0.6), graphs))
    return patients


def reference_collate(graphs: list[dict[str, Data]], scaler: NodeScaler):
    """The collation of commit a9376af: Batch.from_data_list of every graph, then standardise the batch."""
    per_modality = {}
    for row, patient in enumerate(graphs):
        for modality, g in patient.items():
            g = copy.copy(g)
            g.patient = torch.tensor([row])
            per_modality.setdefault(modality, []).append(g)
    batches = {m: Batch.from_data_list(gs) for m, gs in per_modality.items()}
    for m, b in batches.items():
        b.x = (b.x - scaler.mean_[m]) / scaler.scale_[m]
    return batches


# --- sparse GCN propagation -------------------------------------------------------------

@pytest.mark.parametrize("layout", ["sorted", "shuffled", "no edges"])
def test_sparse_gcn_matches_pyg_forward_and_backward(layout):
    rng = np.random.default_rng(1)
    g = graph(rng, 80, 5)
    edge_index = {"sorted": g.edge_index, "shuffled": g.edge_index[:, torch.randperm(g.edge_index.size(1))],
                  "no edges": torch.zeros(2, 0, dtype=torch.long)}[layout]
    torch.manual_seed(0)
    ours = SparseGCNConv(5, 7)
    theirs = GCNConv(5, 7)
    theirs.load_state_dict(ours.state_dict())
    with torch.no_grad():
        ours.bias.normal_()
        theirs.bias.copy_(ours.bias)
    x = torch.randn(80, 5, requires_grad=True)
    results = []
    for conv in (ours, theirs):
        out = conv(x, edge_index)
        grads = torch.autograd.grad(out.pow(2).sum(), [x, conv.lin.weight, conv.bias])
        results.append((out, *grads))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_sparse_gcn_leaves_graphs_with_self_loops_to_pyg():
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 1, 1]])  # (1, 1) is a self-loop: PyG keeps its weight
    assert gcn_adjacency(edge_index, 3) is None
    torch.manual_seed(0)
    ours = SparseGCNConv(4, 3)
    theirs = GCNConv(4, 3)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 4)
    torch.testing.assert_close(ours(x, edge_index), theirs(x, edge_index))


def test_cached_adjacency_equals_the_one_built_from_edge_index(cohort):
    scaler = NodeScaler(**conf_values("node_features")).fit(cohort)
    cache = CollateCache()
    for chunk in (cohort[:7], cohort[5:20]):
        batch = collate_patients([p.graphs for p in chunk], transform=scaler.transform, cache=cache)
        conv = SparseGCNConv(12, 4)
        g = batch.graphs["pathology"]
        torch.testing.assert_close(conv(g.x, batch.adjacency("pathology")), conv(g.x, g.edge_index),
                                   rtol=0, atol=0)
    assert collate_patients([cohort[0].graphs]).adjacency("pathology") is None  # no cache, no matrix


def test_sparra_convolutions_are_sparse_gcn():
    model = AGGREGATORS.create("sparra", DIMS, **conf_values("model/sparra_paper", hidden=8, attention_dim=4))
    assert all(isinstance(conv, SparseGCNConv) for b in model.branches.values() for conv in b.convs)


# --- collation into reused buffers, standardised on the way in ---------------------------

def test_buffered_collation_equals_concatenate_then_standardise(cohort):
    scaler = NodeScaler(**conf_values("node_features")).fit(cohort)
    cache = CollateCache()
    before = {id(g): g.x.clone() for p in cohort for g in p.graphs.values()}
    storage = []
    for chunk in (cohort[:10], cohort[3:9], cohort[10:24]):
        graphs = [p.graphs for p in chunk]
        ours = collate_patients(graphs, transform=scaler.transform, cache=cache)
        theirs = reference_collate(graphs, scaler)
        assert ours.num_patients == len(chunk) and ours.graphs.keys() == theirs.keys()
        for m, b in theirs.items():
            for key in ("x", "edge_index", "batch", "patient", "ptr"):
                assert torch.equal(ours.graphs[m][key], b[key]), (m, key)
            assert ours.graphs[m].num_graphs == b.num_graphs
        storage.append(ours.graphs["pathology"].x.untyped_storage().data_ptr())
    assert storage[1] == storage[0]  # the smaller second batch reuses the first one's buffer
    assert all(torch.equal(g.x, before[id(g)]) for p in cohort for g in p.graphs.values())  # inputs untouched


def test_backward_through_an_overwritten_buffer_fails_loudly(cohort):
    cache = CollateCache()
    layer = torch.nn.Linear(12, 1)
    first = collate_patients([p.graphs for p in cohort[:4]], cache=cache)
    loss = layer(first.graphs["pathology"].x).sum()
    collate_patients([p.graphs for p in cohort[4:8]], cache=cache)  # overwrites first's features
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_streaming_scaler_matches_the_concatenated_statistics(cohort):
    scaler = NodeScaler(**conf_values("node_features")).fit(cohort)
    for m in DIMS:
        x = torch.cat([p.graphs[m].x for p in cohort if m in p.graphs]).double()
        torch.testing.assert_close(scaler.mean_[m], x.mean(0).float(), rtol=0, atol=0)
        torch.testing.assert_close(scaler.scale_[m], x.std(0, unbiased=False).float(), rtol=1e-7, atol=0)


# --- the trainer gives the results of commit a9376af's loop ------------------------------

def reference_fit(model, train, scaler, settings, generator):
    """a9376af's optimisation loop (collate, standardise, PyG propagation) without the C-index passes."""
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=settings.epochs)
    losses = []
    for _ in range(settings.epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator).tolist()
        for start in range(0, len(order), settings.batch_size):
            chunk = [train[i] for i in order[start:start + settings.batch_size]]
            batch = PatientBatch(reference_collate([p.graphs for p in chunk], scaler), len(chunk))
            out = model(batch)
            time = torch.tensor([p.time for p in chunk], dtype=torch.float32)
            event = torch.tensor([p.event for p in chunk], dtype=torch.float32)
            loss = sum({"cox": cox_partial_nll(out.risk, time, event), **out.loss_terms}.values())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        schedule.step()
    return losses


@pytest.mark.parametrize("name", ["abmil", "sparra"])
def test_fit_reproduces_the_reference_loop(cohort, name, monkeypatch):
    train, test = cohort[:18], cohort[18:]
    scaler = NodeScaler(**conf_values("node_features")).fit(train)
    settings = TrainSettings(**conf_values("training", epochs=3, batch_size=6, lr=1e-3))
    # SPARRA without the reconstruction term: top-k keeps near-dead nodes (all-ReLU-zero rows,
    # score ~0) in an order that rounding decides, and the reconstruction targets are those
    # nodes' inputs, so it jumps where everything else moves by rounding only.
    kwargs = conf_values("model/sparra_paper", hidden=8, attention_dim=4, tau=0.0) if name == "sparra" \
        else conf_values("model/abmil", hidden=8, attention_dim=4)
    torch.manual_seed(0)
    ours = AGGREGATORS.create(name, DIMS, **kwargs)
    with monkeypatch.context() as patch:  # the reference propagates with PyG's own GCNConv
        patch.setattr(layers, "SparseGCNConv", GCNConv)
        torch.manual_seed(0)
        theirs = AGGREGATORS.create(name, DIMS, **kwargs)
    theirs.load_state_dict(ours.state_dict())

    torch.manual_seed(1)
    history = fit(ours, train, test, scaler, settings, torch.Generator().manual_seed(2), torch.device("cpu"))
    torch.manual_seed(1)
    losses = reference_fit(theirs, train, scaler, settings, torch.Generator().manual_seed(2))

    per_epoch = np.array(losses).reshape(3, 3).mean(1)  # batches of 6 of 18: equal weights
    np.testing.assert_allclose(history["loss"], per_epoch, rtol=1e-5)
    for (key, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=key)
    if name == "abmil":  # no GCN: the same operations in the same order, bit for bit
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))


def test_predict_splits_importance_per_patient_and_modality(cohort):
    scaler = NodeScaler(**conf_values("node_features")).fit(cohort)
    torch.manual_seed(0)
    model = AGGREGATORS.create("abmil", DIMS, **conf_values("model/abmil", hidden=8, attention_dim=4))
    settings = TrainSettings(**conf_values("training", eval_batch_size=7))
    risk, vectors, importance = predict(model, cohort, scaler, settings, torch.device("cpu"), with_importance=True)
    assert risk.shape == (24,) and vectors.shape == (24, 16) and len(importance) == 24
    for patient, nodes in zip(cohort, importance):
        assert nodes.keys() == patient.graphs.keys()
        for m, values in nodes.items():
            assert values.shape == (patient.graphs[m].num_nodes,)
            assert values.sum().item() == pytest.approx(1.0, abs=1e-5)  # attention sums to one per graph
            assert values.untyped_storage().nbytes() == values.numel() * values.element_size()  # not a view


# --- warm-up of the model's own loss terms -------------------------------------------------

def test_term_weight_ramps_linearly():
    assert [term_weight(e, 4) for e in (1, 2, 4, 5)] == [0.25, 0.5, 1.0, 1.0]
    assert term_weight(1, 0) == 1.0


def test_warmup_scales_the_model_terms_and_logs_them_unscaled(cohort):
    train, test = cohort[:18], cohort[18:]
    scaler = NodeScaler(**conf_values("node_features")).fit(train)

    def run(warmup):
        torch.manual_seed(0)
        model = AGGREGATORS.create("sparra", DIMS, **conf_values("model/sparra_paper", hidden=8, attention_dim=4))
        settings = TrainSettings(**conf_values("training", epochs=3, batch_size=6, warmup_epochs=warmup))
        history = fit(model, train, test, scaler, settings, torch.Generator().manual_seed(0), torch.device("cpu"))
        return history, model

    history, warmed = run(warmup=2)
    terms = history["kl"] + history["recon"]
    np.testing.assert_allclose(history["loss"] - history["cox"], [0.5, 1.0, 1.0] * terms, rtol=1e-4)
    plain, unwarmed = run(warmup=0)
    np.testing.assert_allclose(plain["loss"] - plain["cox"], plain["kl"] + plain["recon"], rtol=1e-5)
    # The first epoch's forward passes see the same weights until the first update, then the runs part.
    assert history["kl"][0] != plain["kl"][0] or history["recon"][0] != plain["recon"][0]
    assert not torch.equal(warmed.risk_head.weight, unwarmed.risk_head.weight)
