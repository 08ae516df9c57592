"""Fit one aggregator on one fold's training patients, then export patient vectors.

Optimisation follows section 3.1 of the SPARRA paper: Adam, cosine decay of the
learning rate over the epochs, weight decay, mini-batches of patients. The loss
is the negative Cox partial log-likelihood of the batch plus the model's own
terms (SPARRA: the weighted KL and reconstruction terms). The test part of the
fold is scored each epoch for the training curve only: no early stopping and no
model selection look at it, the exported model is the last epoch's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from time import perf_counter

import numpy as np
import pandas as pd
import torch
from sksurv.metrics import concordance_index_censored
from tqdm.auto import tqdm

from radiopath.models import Aggregator, collate_patients, cox_partial_nll
from radiopath.training.cohort import Patient
from radiopath.training.scaling import NodeScaler


@dataclass
class TrainSettings:
    """Optimisation settings (``training`` in ``conf/train.yaml``)."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-5
    ties: str = "breslow"
    eval_batch_size: int = 64


def batches(patients: list[Patient], size: int, generator: torch.Generator | None = None):
    """Mini-batches of patients, shuffled by ``generator`` when given."""
    if generator is None:
        order = list(range(len(patients)))
    else:
        order = torch.randperm(len(patients), generator=generator).tolist()
    for start in range(0, len(order), size):
        yield [patients[i] for i in order[start:start + size]]


def _prepare(chunk: list[Patient], scaler: NodeScaler, device: torch.device):
    batch = scaler.transform(collate_patients([p.graphs for p in chunk])).to(device)
    time = torch.tensor([p.time for p in chunk], dtype=torch.float32, device=device)
    event = torch.tensor([p.event for p in chunk], dtype=torch.float32, device=device)
    return batch, time, event


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C-index, NaN when it is undefined (no events, no comparable pair, NaN risk)."""
    if not np.isfinite(risk).all() or event.sum() == 0:
        return math.nan
    try:
        return float(concordance_index_censored(event.astype(bool), time, risk)[0])
    except ValueError:  # no comparable pairs
        return math.nan


def fit(model: Aggregator, train: list[Patient], test: list[Patient], scaler: NodeScaler,
        settings: TrainSettings, generator: torch.Generator, device: torch.device,
        desc: str = "train") -> pd.DataFrame:
    """Train ``model`` in place; returns the training curve, one row per epoch.

    ``epoch_seconds`` is the wall time of the epoch's optimisation pass (without the
    C-index evaluation), the per-epoch time a reproducibility record asks for.
    """
    if not model.trainable:
        return pd.DataFrame(columns=["epoch", "loss", "cox", "lr", "train_c_index", "test_c_index", "epoch_seconds"])
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=settings.epochs)
    rows = []
    for epoch in tqdm(range(1, settings.epochs + 1), desc=desc, unit="epoch", leave=False):
        model.train()
        start = perf_counter()
        sums: dict[str, float] = {}
        for chunk in batches(train, settings.batch_size, generator):
            batch, time, event = _prepare(chunk, scaler, device)
            out = model(batch)
            parts = {"cox": cox_partial_nll(out.risk, time, event, ties=settings.ties), **out.loss_terms}
            loss = sum(parts.values())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            for name, value in {"loss": loss, **parts}.items():
                sums[name] = sums.get(name, 0.0) + value.item() * len(chunk)
        seconds = perf_counter() - start
        rows.append({
            "epoch": epoch,
            **{name: total / len(train) for name, total in sums.items()},
            "lr": schedule.get_last_lr()[0],
            "train_c_index": _c_index(model, train, scaler, settings, device),
            "test_c_index": _c_index(model, test, scaler, settings, device),
            "epoch_seconds": seconds,
        })
        schedule.step()
    return pd.DataFrame(rows)


def _c_index(model, patients, scaler, settings, device) -> float:
    risk = predict(model, patients, scaler, settings, device)[0]
    return harrell_c(np.array([p.time for p in patients]), np.array([p.event for p in patients]), risk)


@torch.no_grad()
def predict(model: Aggregator, patients: list[Patient], scaler: NodeScaler, settings: TrainSettings,
            device: torch.device, with_importance: bool = False):
    """Risk (n,), patient vectors (n, D) and, if asked, node importance per patient and modality."""
    model.eval()
    risks, vectors, importance = [], [], []
    for chunk in batches(patients, settings.eval_batch_size):
        batch, _, _ = _prepare(chunk, scaler, device)
        out = model(batch)
        risks.append(out.risk.cpu())
        vectors.append(out.vector.cpu())
        if with_importance:
            importance += _split_importance(batch, out.node_importance, len(chunk))
    return torch.cat(risks).numpy(), torch.cat(vectors).numpy(), importance


def _split_importance(batch, node_importance: dict[str, torch.Tensor], n: int) -> list[dict[str, torch.Tensor]]:
    """Per patient of the batch: modality -> importance of each node of its graph."""
    per_patient: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
    for modality, values in node_importance.items():
        graphs = batch.graphs[modality]
        for g, patient in enumerate(graphs.patient.tolist()):
            per_patient[patient][modality] = values[graphs.batch == g].cpu()
    return per_patient
