"""The train stage: cross-validated training of a graph aggregator.

Reads the cohort manifest (survival) and the graph store (``data.graph_dir``),
makes or reuses patient-level folds (``RUN/folds.csv``), and per fold ``k`` fits
the aggregator on the training patients and writes

- ``RUN/fold{k}/model.pt``: state dict, model settings, node scaler;
- ``RUN/fold{k}/history.csv``: epoch, loss and its parts, lr, train/test C-index;
- ``RUN/fold{k}/vectors.csv``: ``case_id, split, risk, v0 … vD`` for every patient;
- ``RUN/fold{k}/importance/{case_id}.pt``: node importance of each test patient,
  one tensor per modality aligned with the graph's nodes (not for Mean);
- ``RUN/fold{k}/tuning.csv`` with ``tune.enabled=true``: the grid's inner-CV scores on
  the fold's training patients and the chosen point (:mod:`radiopath.training.tuning`).

A fold whose ``vectors.csv`` exists is skipped on a rerun (``overwrite=true``
retrains); ``vectors.csv`` is written last, so it marks a finished fold.
``fold=k`` (or a list) trains only those folds, so a multirun trains one fold per
job in the same run folder; each job then writes ``run_record_fold{k}.json`` and
``failures_fold{k}.csv`` instead of ``run_record.json`` and ``failures.csv``
(:func:`radiopath.layout.part_filename`).

"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from radiopath.config import resolve_device
from radiopath.entry import StageResult
from radiopath.io import atomic_torch_save, atomic_write_csv, atomic_write_text
from radiopath.layout import FAILURES_NAME, RECORD_NAME, RunFolder, part_filename, vector_columns
from radiopath.models import AGGREGATORS, check_model_config
from radiopath.modality import modality
from radiopath.repro import active
from radiopath.runner import RunSummary
from radiopath.training.cohort import GraphCohort, Patient, load_graph_cohort
from radiopath.training.folds import load_or_make_folds
from radiopath.training.scaling import NodeScaler
from radiopath.training.trainer import TrainSettings, c_index, fit, predict
from radiopath.training.tuning import search, tuning_grid, with_values

log = logging.getLogger(__name__)


class Fitted(NamedTuple):
    """A trained model with what it was trained with."""

    model: torch.nn.Module
    model_kwargs: dict
    scaler: NodeScaler
    settings: TrainSettings
    history: pd.DataFrame
    seconds: float


def node_scaler(cfg: DictConfig) -> NodeScaler:
    """An unfitted node scaler with ``cfg.node_features``; a bad value fails naming its key."""
    return NodeScaler(**OmegaConf.to_container(cfg.node_features, resolve=True))


def fit_model(cfg: DictConfig, in_dims: dict[str, int], train: list[Patient], watch: list[Patient], *,
              seed: int, device: torch.device, desc: str) -> Fitted:
    """Build ``cfg.model`` and fit it on ``train`` (scaler too); ``watch`` is only scored for the curve."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model_kwargs = OmegaConf.to_container(cfg.model.kwargs, resolve=True)
    scaler = node_scaler(cfg).fit(train)
    model = AGGREGATORS.create(cfg.model.name, scaler.out_dims(in_dims), **model_kwargs).to(device)
    settings = TrainSettings.from_config(OmegaConf.to_container(cfg.training, resolve=True))
    start = time.perf_counter()
    history = fit(model, train, watch, scaler, settings, generator, device, desc=desc)
    return Fitted(model, model_kwargs, scaler, settings, history, time.perf_counter() - start)


def tune_fold(cfg: DictConfig, in_dims: dict[str, int], train: list[Patient], *, k: int, seed: int,
              device: torch.device) -> dict:
    """Choose fold ``k``'s grid point on its training patients only; writes ``fold{k}/tuning.csv``."""

    def score(values: dict, inner_train: list[Patient], inner_validation: list[Patient]) -> float:
        # Every point and inner fold starts from the fold's seed: points differ only by their values.
        fitted = fit_model(with_values(cfg, values), in_dims, inner_train, inner_validation,
                           seed=seed, device=device, desc=f"fold {k} tuning")
        risk = predict(fitted.model, inner_validation, fitted.scaler, fitted.settings, device)[0]
        return c_index(inner_validation, risk)

    start = time.perf_counter()
    tuning = search(tuning_grid(cfg), train, score, inner_folds=int(cfg.tune.inner_folds),
                    seed=int(cfg.tune.seed))
    atomic_write_csv(tuning.table, RunFolder(cfg.output_dir).tuning(k))
    active().timing(f"fold{k}_tuning", time.perf_counter() - start)
    active().note(f"fold{k}: tuned on its training patients by {cfg.tune.inner_folds}-fold inner CV, "
                  f"chose {tuning.chosen}")
    print(f"fold {k}: tuning chose {tuning.chosen}")
    return tuning.chosen


def train_fold(cfg: DictConfig, cohort: GraphCohort, folds: pd.DataFrame, k: int, device: torch.device) -> float:
    """Tune (with ``tune.enabled``), train and export fold ``k``; returns its final test C-index."""
    is_test = (folds["fold"] == k).to_numpy()
    train = [p for p, t in zip(cohort.patients, is_test) if not t]
    test = [p for p, t in zip(cohort.patients, is_test) if t]
    seed = int(cfg.seed) + k  # each fold its own, recorded stream
    if AGGREGATORS.get(cfg.model.name).trainable and not any(p.event for p in train):
        log.warning("fold %d: no events among its %d training patients: the Cox loss has nothing to learn", k, len(train))
    chosen = tune_fold(cfg, cohort.in_dims, train, k=k, seed=seed, device=device) if cfg.tune.enabled else None
    fitted = fit_model(with_values(cfg, chosen or {}), cohort.in_dims, train, test,
                       seed=seed, device=device, desc=f"fold {k}")
    active().parameters(f"fold{k}", fitted.model)
    risk = export_fold(cfg, cohort, fitted, train, test, k=k, seed=seed, chosen=chosen, device=device)
    return c_index(test, risk[len(train):])


def export_fold(cfg: DictConfig, cohort: GraphCohort, fitted: Fitted, train: list[Patient], test: list[Patient],
                *, k: int, seed: int, chosen: dict | None, device: torch.device) -> np.ndarray:
    """Write fold ``k``'s checkpoint, curve, importance and vectors; returns the risk of train + test."""
    run_folder = RunFolder(cfg.output_dir)
    everyone = train + test
    risk, vectors, importance = predict(fitted.model, everyone, fitted.scaler, fitted.settings, device,
                                        with_importance=True)
    table = pd.DataFrame(vectors, columns=vector_columns(vectors.shape[1]))
    table.insert(0, "risk", risk)
    table.insert(0, "split", ["train"] * len(train) + ["test"] * len(test))
    table.insert(0, "case_id", [p.case_id for p in everyone])

    atomic_torch_save({
        "state_dict": fitted.model.state_dict(),
        "model": cfg.model.name,
        "model_kwargs": fitted.model_kwargs,
        "in_dims": fitted.scaler.out_dims(cohort.in_dims),  # the model's, after node_features
        "scaler": fitted.scaler.state_dict(),
        "seed": seed,
        "train_seconds": fitted.seconds,
        "tuned": chosen,  # the grid point tuning chose (None without tuning)
    }, run_folder.model(k))
    atomic_write_csv(fitted.history, run_folder.history(k))
    for patient, nodes in zip(everyone[len(train):], importance[len(train):]):
        if nodes:
            atomic_torch_save(nodes, run_folder.importance(k, patient.case_id))
    atomic_write_csv(table, run_folder.vectors(k))  # last: marks the fold finished
    active().timing(f"fold{k}", fitted.seconds)
    active().output(run_folder.model(k), f"fold{k} checkpoint")
    return risk


def requested_folds(cfg: DictConfig) -> list[int] | None:
    """The folds ``fold`` asks for (an int or a list), sorted; None for all of them."""
    if cfg.fold is None:
        return None
    return [int(cfg.fold)] if isinstance(cfg.fold, int) else sorted({int(k) for k in cfg.fold})


def record_name(cfg: DictConfig) -> str:
    """The run record's file name: one per fold job when ``fold`` is set (they share the run folder)."""
    return part_filename(RECORD_NAME, folds=requested_folds(cfg))


def folds_to_train(cfg: DictConfig, folds: pd.DataFrame) -> list[int]:
    """Every fold of ``folds.csv``, or those of ``fold``; a fold not in the file is an error."""
    available = sorted(int(k) for k in folds["fold"].unique())
    requested = requested_folds(cfg)
    if requested is None:
        return available
    unknown = sorted(set(requested) - set(available))
    if unknown:
        raise SystemExit(f"fold={unknown}: {RunFolder(cfg.output_dir).folds} has folds {available}")
    return requested


DATA_PATHS = ("manifest", "graph_dir", "features_dir")


def run_config(cfg: DictConfig) -> dict:
    """The run's ``config.yaml`` content: resolved, without ``fold``, the cohort's paths absolute.

    Without ``fold``, every fold job of a run writes the same file; absolute paths let the
    report and the survival stage find the graphs, features and manifest from any folder.
    """
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("fold", None)
    for key in DATA_PATHS:
        if config["data"].get(key) is not None:
            config["data"][key] = str(Path(config["data"][key]).resolve())
    return config


def write_run_config(cfg: DictConfig, path: Path) -> None:
    """Write :func:`run_config` to ``path``."""
    atomic_write_text(OmegaConf.to_yaml(run_config(cfg)), path)


def check_config(cfg: DictConfig) -> None:
    """Fail before the cohort loads: model, training settings, node features, modalities, tuning grid."""
    check_model_config(cfg.model.name, OmegaConf.to_container(cfg.model.kwargs, resolve=True),
                       modalities=list(cfg.modalities))
    TrainSettings.from_config(OmegaConf.to_container(cfg.training, resolve=True))
    node_scaler(cfg)
    for name in cfg.modalities:
        modality(name)
    if cfg.tune.enabled:
        tuning_grid(cfg)


def fold_score_text(cfg: DictConfig, score: float) -> str:
    """A fold's test C-index as printed; says why when there is none."""
    if not np.isnan(score):
        return f"{score:.3f}"
    if not AGGREGATORS.get(cfg.model.name).trainable:
        return "n/a (untrained: the survival stage scores its vectors)"
    return "n/a (no comparable pair among the fold's test patients: no event, or every event tied)"


def run_training(cfg: DictConfig) -> RunSummary:
    """Folds, then every fold (of ``fold``) not yet finished; returns the per-fold summary."""
    check_config(cfg)
    run_folder = RunFolder(cfg.output_dir)
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    cohort = load_graph_cohort(cfg.data.manifest, cfg.data.graph_dir, list(cfg.modalities),
                               allow_mixed_graphs=cfg.allow_mixed_graphs)
    summary = RunSummary(f"train {cfg.model.name} on {'+'.join(cfg.modalities)}")
    summary.add_failures(cohort.problems)
    if not cohort.patients:
        raise SystemExit(f"no patient has a graph of {list(cfg.modalities)} in {cfg.data.graph_dir}")
    if AGGREGATORS.get(cfg.model.name).trainable and not cohort.events.any():
        raise SystemExit(f"all {len(cohort.patients)} patients are censored (os_event = 0): "
                         "the Cox loss has no event to learn from")
    record = active()
    record.input(cfg.data.manifest, "cohort manifest")
    record.dataset(patients=len(cohort.patients), events=int(cohort.events.sum()),
                   censored=int((cohort.events == 0).sum()), modalities_present=cohort.modality_counts(),
                   rejected=len(cohort.problems))
    print(f"{len(cohort.patients)} patients ({int(cohort.events.sum())} events); "
          f"with each modality: {cohort.modality_counts()}; node features: {cohort.in_dims}")

    write_run_config(cfg, run_folder.config)
    folds = load_or_make_folds(run_folder.folds, cohort.case_ids, cohort.events,
                               n_folds=cfg.folds.n_folds, seed=cfg.folds.seed)
    record.input(run_folder.folds, "folds")
    selected = folds_to_train(cfg, folds)
    start = time.perf_counter()
    for k in selected:
        if not cfg.overwrite and run_folder.vectors(k).is_file():
            summary.skipped.append(f"fold{k}")
            record.output(run_folder.model(k), f"fold{k} checkpoint")
            continue
        score = train_fold(cfg, cohort, folds, k, device)
        summary.done.append(f"fold{k}")
        print(f"fold {k}: test C-index {fold_score_text(cfg, score)}")
    summary.seconds = time.perf_counter() - start
    summary.write_failures(run_folder.root / part_filename(FAILURES_NAME, folds=requested_folds(cfg)))
    for k in selected:  # skipped folds too: the record covers what this run was asked for
        if run_folder.history(k).is_file():
            record.epochs(f"fold{k}", pd.read_csv(run_folder.history(k)))
    record.cases(summary)
    return summary


def run(cfg: DictConfig) -> StageResult:
    """Train every fold (of ``fold``) not yet finished; the result names the run folder."""
    summary = run_training(cfg)
    return StageResult.of_summaries([summary], Path(cfg.output_dir), "run")
