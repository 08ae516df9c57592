"""Fit one aggregator on one fold's training patients, then export patient vectors.

Optimisation follows section 3.1 of the SPARRA paper: Adam, cosine decay of the
learning rate over the epochs, weight decay, mini-batches of patients. The loss
is the negative Cox partial log-likelihood of the batch plus the model's own
terms (SPARRA: the weighted KL and reconstruction terms), those optionally ramped up
linearly over the first ``warmup_epochs``. The test part of the fold is scored (every
``eval_every``-th epoch and the last) for the training curve only: no early stopping and
no model selection look at it, the exported model is the last epoch's.

Speed: batches are collated into one reused node-feature buffer per modality,
standardised on the way in (no per-batch concatenation, copies or fresh allocations
of the features); GCN layers propagate with a sparse product
(:class:`radiopath.models.layers.SparseGCNConv`). Measurements are in
``scripts/bench_train_results.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from time import perf_counter

import numpy as np
import pandas as pd
import torch
from sksurv.metrics import concordance_index_censored
from tqdm.auto import tqdm

from radiopath.errors import ConfigError, check_choice, check_int, check_number
from radiopath.models import Aggregator, collate_patients, cox_partial_nll
from radiopath.models.batch import CollateCache
from radiopath.models.cox import TIES
from radiopath.training.cohort import Patient
from radiopath.training.scaling import NodeScaler


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """Optimisation settings; their values live in ``training`` of ``conf/train.yaml`` only.

    A bad value raises :class:`~radiopath.errors.ConfigError` naming ``training.<key>``.
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    ties: str
    eval_batch_size: int
    warmup_epochs: int  # the model's own loss terms weighted by min(1, epoch / warmup_epochs); 0: off
    eval_every: int     # train/test C-index of the curve every this many epochs (and the last); NaN between

    def __post_init__(self):
        for key in ("epochs", "batch_size", "eval_batch_size", "eval_every"):
            check_int(f"training.{key}", getattr(self, key), minimum=1)
        check_int("training.warmup_epochs", self.warmup_epochs, minimum=0)
        check_number("training.lr", self.lr, "(0, inf)")
        check_number("training.weight_decay", self.weight_decay, "[0, inf)")
        check_choice("training.ties", self.ties, TIES)

    @classmethod
    def from_config(cls, training: Mapping) -> "TrainSettings":
        """The settings of ``cfg.training``; a missing or unknown key is a ConfigError naming it."""
        names = [f.name for f in fields(cls)]
        for key in training:
            if key not in names:
                raise ConfigError(f"training.{key}", f"not a training setting; the settings: {', '.join(names)}")
        for name in names:
            if name not in training:
                raise ConfigError(f"training.{name}", "missing (conf/train.yaml holds every training setting)")
        return cls(**{name: training[name] for name in names})


def term_weight(epoch: int, warmup_epochs: int) -> float:
    """Weight of the model's own loss terms in (1-based) ``epoch``: a linear ramp to 1 over ``warmup_epochs``."""
    return min(1.0, epoch / warmup_epochs) if warmup_epochs > 0 else 1.0


def batches(patients: list[Patient], size: int, generator: torch.Generator | None = None):
    """Mini-batches of patients, shuffled by ``generator`` when given."""
    if generator is None:
        order = list(range(len(patients)))
    else:
        order = torch.randperm(len(patients), generator=generator).tolist()
    for start in range(0, len(order), size):
        yield [patients[i] for i in order[start:start + size]]


def _prepare(chunk: list[Patient], scaler: NodeScaler, device: torch.device, cache: CollateCache):
    batch = collate_patients([p.graphs for p in chunk], transform=scaler.transform, widths=scaler.widths(),
                             cache=cache).to(device)
    time = torch.tensor([p.time for p in chunk], dtype=torch.float32, device=device)
    event = torch.tensor([p.event for p in chunk], dtype=torch.float32, device=device)
    return batch, time, event


def concordance(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
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

    ``loss`` is what was minimised (``cox`` plus the model's terms times the epoch's
    warm-up weight); the per-term columns are the terms as the model returns them.
    ``epoch_seconds`` is the wall time of the epoch's optimisation pass (without the
    C-index evaluation), the per-epoch time a reproducibility record asks for.
    """
    if not model.trainable:
        return pd.DataFrame(columns=["epoch", "loss", "cox", "lr", "train_c_index", "test_c_index", "epoch_seconds"])
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=settings.epochs)
    cache = CollateCache()  # shared by the training steps and the C-index passes
    rows = []
    for epoch in tqdm(range(1, settings.epochs + 1), desc=desc, unit="epoch", leave=False):
        model.train()
        weight = term_weight(epoch, settings.warmup_epochs)
        start = perf_counter()
        sums: dict[str, float] = {}
        for chunk in batches(train, settings.batch_size, generator):
            batch, time, event = _prepare(chunk, scaler, device, cache)
            out = model(batch)
            parts = {"cox": cox_partial_nll(out.risk, time, event, ties=settings.ties), **out.loss_terms}
            # Summed in the order of ``parts``: with weight 1 bit-identical to an unweighted sum.
            loss = sum([parts["cox"], *(weight * term for term in out.loss_terms.values())])
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
            **_curve_point(model, train, test, scaler, settings, device, cache, epoch),
            "epoch_seconds": seconds,
        })
        schedule.step()
    return pd.DataFrame(rows)


def _curve_point(model, train, test, scaler, settings, device, cache, epoch: int) -> dict[str, float]:
    """Train and test C-index of the curve at ``epoch``: NaN between every ``eval_every``-th epoch and the last."""
    if epoch % settings.eval_every and epoch != settings.epochs:
        return {"train_c_index": math.nan, "test_c_index": math.nan}
    return {"train_c_index": _c_index(model, train, scaler, settings, device, cache),
            "test_c_index": _c_index(model, test, scaler, settings, device, cache)}


def c_index(patients: list[Patient], risk: np.ndarray) -> float:
    """Harrell's C of ``risk`` against the patients' outcomes (NaN where undefined)."""
    return concordance(np.array([p.time for p in patients]), np.array([p.event for p in patients]), risk)


def _c_index(model, patients, scaler, settings, device, cache) -> float:
    return c_index(patients, predict(model, patients, scaler, settings, device, cache=cache)[0])


@torch.no_grad()
def predict(model: Aggregator, patients: list[Patient], scaler: NodeScaler, settings: TrainSettings,
            device: torch.device, with_importance: bool = False, *, cache: CollateCache | None = None):
    """Risk (n,), patient vectors (n, D) and, if asked, node importance per patient and modality.

    ``cache``: what collation reuses (a caller's, e.g. ``fit``'s, to share it across calls).
    """
    model.eval()
    cache = CollateCache() if cache is None else cache
    risks, vectors, importance = [], [], []
    for chunk in batches(patients, settings.eval_batch_size):
        batch, _, _ = _prepare(chunk, scaler, device, cache)
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
        # Graphs are contiguous node ranges of the batch: ptr holds their boundaries.
        for patient, part in zip(graphs.patient.tolist(), values.cpu().split(graphs.ptr.diff().tolist())):
            per_patient[patient][modality] = part.clone()
    return per_patient
