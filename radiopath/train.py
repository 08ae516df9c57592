"""``python -m radiopath.train``: cross-validated training of a graph aggregator.

Reads the cohort manifest (survival) and the graph store (``data.graph_dir``),
makes or reuses patient-level folds (``RUN/folds.csv``), and per fold ``k`` fits
the aggregator on the training patients and writes

- ``RUN/fold{k}/model.pt``: state dict, model settings, node scaler;
- ``RUN/fold{k}/history.csv``: epoch, loss and its parts, lr, train/test C-index;
- ``RUN/fold{k}/vectors.csv``: ``case_id, split, risk, v0 … vD`` for every patient;
- ``RUN/fold{k}/importance/{case_id}.pt``: node importance of each test patient,
  one tensor per modality aligned with the graph's nodes (not for Mean).

A fold whose ``vectors.csv`` exists is skipped on a rerun (``overwrite=true``
retrains); ``vectors.csv`` is written last, so it marks a finished fold.

Examples::

    python -m radiopath.train experiment=radiopathomics_sparra
    python -m radiopath.train data.manifest=/cohort/manifest.csv data.graph_dir=graphs/cohort \\
        model=abmil modalities=[pathology] output_dir=runs/cohort/pathomics_abmil training.epochs=50
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from radiopath.config import resolve_device
from radiopath.io import atomic_torch_save, atomic_write_csv, atomic_write_text
from radiopath.models import AGGREGATORS, build_aggregator
from radiopath.repro import active, run_record
from radiopath.runner import RunSummary
from radiopath.training.cohort import GraphCohort, load_graph_cohort
from radiopath.training.folds import load_or_make_folds
from radiopath.training.scaling import NodeScaler
from radiopath.training.trainer import TrainSettings, fit, harrell_c, predict

log = logging.getLogger(__name__)


def train_fold(cfg: DictConfig, cohort: GraphCohort, folds: pd.DataFrame, k: int, device: torch.device) -> float:
    """Train and export fold ``k``; returns its final test C-index."""
    fold_dir = Path(cfg.output_dir) / f"fold{k}"
    is_test = (folds["fold"] == k).to_numpy()
    train = [p for p, t in zip(cohort.patients, is_test) if not t]
    test = [p for p, t in zip(cohort.patients, is_test) if t]

    seed = int(cfg.seed) + k  # each fold its own, recorded stream
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model_kwargs = OmegaConf.to_container(cfg.model.kwargs, resolve=True)
    model = build_aggregator(cfg.model.name, cohort.in_dims, **model_kwargs).to(device)
    active().parameters(f"fold{k}", model)
    if model.trainable and not any(p.event for p in train):
        log.warning("fold %d: no events among its %d training patients: the Cox loss has nothing to learn", k, len(train))
    scaler = NodeScaler().fit(train)
    settings = TrainSettings(**OmegaConf.to_container(cfg.training, resolve=True))

    start = time.perf_counter()
    history = fit(model, train, test, scaler, settings, generator, device, desc=f"fold {k}")
    seconds = time.perf_counter() - start

    everyone = train + test
    risk, vectors, importance = predict(model, everyone, scaler, settings, device, with_importance=True)
    table = pd.DataFrame(vectors, columns=[f"v{i}" for i in range(vectors.shape[1])])
    table.insert(0, "risk", risk)
    table.insert(0, "split", ["train"] * len(train) + ["test"] * len(test))
    table.insert(0, "case_id", [p.case_id for p in everyone])

    atomic_torch_save({
        "state_dict": model.state_dict(),
        "model": cfg.model.name,
        "model_kwargs": model_kwargs,
        "in_dims": cohort.in_dims,
        "scaler": scaler.state_dict(),
        "seed": seed,
        "train_seconds": seconds,
    }, fold_dir / "model.pt")
    atomic_write_csv(history, fold_dir / "history.csv")
    for patient, nodes in zip(everyone[len(train):], importance[len(train):]):
        if nodes:
            atomic_torch_save(nodes, fold_dir / "importance" / f"{patient.case_id}.pt")
    atomic_write_csv(table, fold_dir / "vectors.csv")  # last: marks the fold finished
    active().timing(f"fold{k}", seconds)
    active().output(fold_dir / "model.pt", f"fold{k} checkpoint")
    return harrell_c(np.array([p.time for p in test]), np.array([p.event for p in test]), risk[len(train):])


def run_training(cfg: DictConfig) -> RunSummary:
    """Folds, then every fold not yet finished; returns the per-fold summary."""
    out = Path(cfg.output_dir)
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    cohort = load_graph_cohort(cfg.data.manifest, cfg.data.graph_dir, list(cfg.modalities))
    summary = RunSummary(f"train {cfg.model.name} on {'+'.join(cfg.modalities)}")
    summary.add_failures(cohort.problems)
    if not cohort.patients:
        raise SystemExit(f"no patient has a graph of {list(cfg.modalities)} in {cfg.data.graph_dir}")
    if AGGREGATORS[cfg.model.name].trainable and not cohort.events.any():
        raise SystemExit(f"all {len(cohort.patients)} patients are censored (os_event = 0): "
                         "the Cox loss has no event to learn from")
    record = active()
    record.input(cfg.data.manifest, "cohort manifest")
    record.dataset(patients=len(cohort.patients), events=int(cohort.events.sum()),
                   censored=int((cohort.events == 0).sum()), modalities_present=cohort.modality_counts(),
                   rejected=len(cohort.problems))
    print(f"{len(cohort.patients)} patients ({int(cohort.events.sum())} events); "
          f"with each modality: {cohort.modality_counts()}; node features: {cohort.in_dims}")

    atomic_write_text(OmegaConf.to_yaml(cfg, resolve=True), out / "config.yaml")
    folds = load_or_make_folds(out / "folds.csv", cohort.case_ids, cohort.events,
                               cfg.folds.n_folds, cfg.folds.seed)
    record.input(out / "folds.csv", "folds")
    start = time.perf_counter()
    scores = []
    for k in sorted(folds["fold"].unique()):
        if not cfg.overwrite and (out / f"fold{k}" / "vectors.csv").is_file():
            summary.skipped.append(f"fold{k}")
            record.output(out / f"fold{k}" / "model.pt", f"fold{k} checkpoint")
            continue
        scores.append(train_fold(cfg, cohort, folds, int(k), device))
        summary.done.append(f"fold{k}")
        score = "n/a (untrained: the survival stage scores its vectors)" if np.isnan(scores[-1]) else f"{scores[-1]:.3f}"
        print(f"fold {k}: test C-index {score}")
    summary.seconds = time.perf_counter() - start
    summary.write_failures(out / "failures.csv")
    for k in sorted(folds["fold"].unique()):  # skipped folds too: the record covers the whole run
        history = out / f"fold{k}" / "history.csv"
        if history.is_file():
            record.epochs(f"fold{k}", pd.read_csv(history))
    record.cases(summary)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    with run_record("train", cfg, cfg.output_dir):
        summary = run_training(cfg)
    print(summary.report())
    print(f"run in {Path(cfg.output_dir).resolve()}")
    if not summary.ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
