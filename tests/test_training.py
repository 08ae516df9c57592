"""Cross-validated training: folds, fold-local scaling, resume, reporting, a planted signal."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import Data

from radiopath.graphs.edges import knn_edges
from radiopath.graphs.io import graph_path, save_graph
from radiopath.folds import make_folds
from radiopath.training.folds import load_or_make_folds
from radiopath.training.stage import run_training

SMALL_MODEL = ["model.kwargs.hidden=16", "model.kwargs.attention_dim=8", "model.kwargs.dropout=0.1"]


def toy_cohort(root: Path, n: int = 60, seed: int = 0, signal: float = 3.0) -> Path:
    """Graphs whose few 'hot' nodes carry a patient's log-hazard z in feature 0.

    Each patient has a radiology graph (3-D) and a pathology graph (2-D) of 20-40
    nodes; 8 nodes per graph get ``signal * z`` added to feature 0, the rest is
    noise. Times are exponential with hazard ``exp(z)``; about a third are censored.
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    rows = []
    for i in range(n):
        case_id = f"toy-{i:03d}"
        for modality, dims, width in (("radiology", 3, 6), ("pathology", 2, 10)):
            nodes = int(rng.integers(20, 41))
            pos = rng.uniform(0, 10, size=(nodes, dims))
            x = rng.normal(size=(nodes, width))
            x[:8, 0] += signal * z[i]
            graph = Data(x=torch.tensor(x, dtype=torch.float32),
                         edge_index=torch.from_numpy(knn_edges(pos, 4)),
                         pos=torch.tensor(pos, dtype=torch.float32), num_nodes=nodes)
            save_graph(graph, graph_path(root / "graphs", modality, case_id))
        time = rng.exponential(np.exp(-z[i])) * 1000 + 1
        censor = rng.exponential(2000)
        rows.append({"case_id": case_id, "os_time": min(time, censor), "os_event": int(time <= censor)})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def train_config(compose_config, root, manifest, *overrides):
    return compose_config("train", [
        f"data.manifest={manifest}", f"data.graph_dir={root / 'graphs'}", "training.epochs=3",
        f"output_dir={root / 'run'}", *overrides,
    ])


def test_folds_are_disjoint_stratified_and_reused(tmp_path):
    ids = [f"p{i}" for i in range(50)]
    events = np.array([1] * 20 + [0] * 30)
    folds = make_folds(ids, events, n_folds=5, seed=1)
    assert sorted(folds["case_id"]) == sorted(ids)
    assert folds["fold"].value_counts().tolist() == [10] * 5
    assert [int(events[folds["fold"] == k].sum()) for k in range(5)] == [4] * 5

    written = load_or_make_folds(tmp_path / "folds.csv", ids, events, n_folds=5, seed=1)
    again = load_or_make_folds(tmp_path / "folds.csv", ids, events, n_folds=5, seed=99)
    pd.testing.assert_frame_equal(written, again)
    with pytest.raises(ValueError, match="p50"):
        load_or_make_folds(tmp_path / "folds.csv", ids + ["p50"], np.append(events, 1), n_folds=5, seed=1)


def test_sparra_run_writes_every_fold_and_is_deterministic(compose_config, tmp_path):
    manifest = toy_cohort(tmp_path, n=30)
    cfg = train_config(compose_config, tmp_path, manifest, "model=sparra", *SMALL_MODEL)
    assert run_training(cfg).ok
    run = tmp_path / "run"
    folds = pd.read_csv(run / "folds.csv")
    for k in range(5):
        vectors = pd.read_csv(run / f"fold{k}" / "vectors.csv")
        assert list(vectors.columns[:3]) == ["case_id", "split", "risk"]
        assert vectors.shape[1] == 3 + 2 * 16  # two modality blocks of `hidden`
        test_ids = set(vectors.loc[vectors["split"] == "test", "case_id"])
        assert test_ids == set(folds.loc[folds["fold"] == k, "case_id"])
        assert len(vectors) == 30 and vectors["risk"].notna().all()
        history = pd.read_csv(run / f"fold{k}" / "history.csv")
        assert history["epoch"].tolist() == [1, 2, 3] and {"cox", "kl", "recon"} <= set(history.columns)
        for case_id in test_ids:
            importance = torch.load(run / f"fold{k}" / "importance" / f"{case_id}.pt", weights_only=True)
            assert set(importance) == {"radiology", "pathology"}

    first = pd.read_csv(run / "fold2" / "vectors.csv")
    rerun = train_config(compose_config, tmp_path, manifest, "model=sparra", "overwrite=true", *SMALL_MODEL)
    run_training(rerun)
    pd.testing.assert_frame_equal(first, pd.read_csv(run / "fold2" / "vectors.csv"))


def test_scaler_is_fitted_on_the_training_patients_only(compose_config, tmp_path):
    manifest = toy_cohort(tmp_path, n=20)
    cfg = train_config(compose_config, tmp_path, manifest, "model=mean", "modalities=[pathology]")
    run_training(cfg)
    folds = pd.read_csv(tmp_path / "run" / "folds.csv")
    train_ids = folds.loc[folds["fold"] != 0, "case_id"]
    nodes = torch.cat([torch.load(graph_path(tmp_path / "graphs", "pathology", c), weights_only=False).x
                       for c in train_ids])
    saved = torch.load(tmp_path / "run" / "fold0" / "model.pt", weights_only=True)["scaler"]
    torch.testing.assert_close(saved["mean"]["pathology"], nodes.mean(0))


def test_resume_skips_finished_folds_and_reports_cases(compose_config, tmp_path):
    manifest = toy_cohort(tmp_path, n=25)
    # One patient without any graph, one with pathology only: the first is reported, the second kept.
    frame = pd.read_csv(manifest)
    pd.concat([frame, pd.DataFrame([{"case_id": "no-graphs", "os_time": 10.0, "os_event": 1}])]).to_csv(
        manifest, index=False)
    graph_path(tmp_path / "graphs", "radiology", "toy-000").unlink()
    cfg = train_config(compose_config, tmp_path, manifest, "model=abmil", *SMALL_MODEL[:1], "model.kwargs.attention_dim=8")
    summary = run_training(cfg)
    assert [case for case, _ in summary.failed] == ["no-graphs"]
    failures = pd.read_csv(tmp_path / "run" / "failures.csv")
    assert failures["case_id"].tolist() == ["no-graphs"] and "no graph" in failures["reason"][0]
    vectors = pd.concat(pd.read_csv(tmp_path / "run" / f"fold{k}" / "vectors.csv") for k in range(5))
    one_modality = vectors[(vectors["case_id"] == "toy-000") & (vectors["split"] == "test")]
    assert len(one_modality) == 1
    assert (one_modality[[f"v{i}" for i in range(16)]] == 0).all(axis=None)  # the missing radiology block

    marker = tmp_path / "run" / "fold1" / "vectors.csv"
    before = marker.stat().st_mtime_ns
    again = run_training(cfg)
    assert again.skipped == [f"fold{k}" for k in range(5)] and marker.stat().st_mtime_ns == before


def test_sparra_finds_a_planted_signal(compose_config, tmp_path):
    manifest = toy_cohort(tmp_path, n=80, seed=3)
    cfg = train_config(compose_config, tmp_path, manifest, "model=sparra", "modalities=[pathology]",
                       "training.epochs=25", "training.lr=3e-3", "model.kwargs.ratio=0.5", *SMALL_MODEL)
    run_training(cfg)
    run = tmp_path / "run"
    truth = pd.read_csv(manifest).set_index("case_id")
    from sksurv.metrics import concordance_index_censored

    scores = []
    for k in range(5):
        test = pd.read_csv(run / f"fold{k}" / "vectors.csv").query("split == 'test'").set_index("case_id")
        outcome = truth.loc[test.index]
        scores.append(concordance_index_censored(outcome["os_event"].astype(bool), outcome["os_time"], test["risk"])[0])
    assert np.mean(scores) > 0.65, scores
