"""``multiphase``: one 2-D ResNet-18 per CT phase on the largest tumour slice, fused by an MLP.

After the multi-phase CNN of the malignancy/aggressiveness paper. ``phases`` lists manifest
columns, one CT phase each (default ``[ct]``: the demo cohort has one phase); every phase
must lie on the grid of the ``mask`` column (registered to it, as in the paper). Per
phase the input is the axial slice with the largest tumour area, ``slice_size`` pixels at
``spacing_mm`` around the tumour centroid, HU clipped to ``hu_window`` ([-500, 500]) and
mapped to [0, 1] (:func:`~radiopath.classification.ct_inputs.tumour_slices`).

Missing phases: a case whose cell for a phase is empty (or whose file is absent) gets
zero features for that phase plus a missing indicator, and that phase's ResNet never
sees it (:class:`~radiopath.classification.nets.MultiPhaseResNet`); every case needs at
least one phase. Training: cross-entropy with class weights inverse to the training
class frequencies, Adam, random flips and 90-degree rotations; weights are random
(the paper fine-tunes ImageNet weights, which are never downloaded here).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from radiopath.classification import ct_inputs
from radiopath.classification.base import PIPELINES, CasePipeline
from radiopath.classification.nets import MultiPhaseResNet
from radiopath.classification.nets.fitting import (
    predict_in_batches, random_flips, seeded, shuffled_batches, train_epochs,
)
from radiopath.errors import CaseError


def phase_slices(row: Mapping, *, column: str, **settings) -> dict[str, np.ndarray]:
    """The tumour slices of one phase of a case, or nothing when the case lacks that phase."""
    return ct_inputs.tumour_slices(row, column=column, **settings) if ct_inputs.has_image(row, column) else {}


class MultiPhasePipeline(CasePipeline):
    """Largest tumour slice per phase -> per-phase ResNet-18 -> MLP; P(y = 1)."""

    name = "multiphase"

    def __init__(
        self,
        *,
        phases: Sequence[str],
        spacing_mm: float,
        hu_window: Sequence[float],
        slice_size: int,
        slice_depth: int,
        resnet_blocks: Sequence[int],
        hidden_dim: int,
        dropout: float,
        epochs: int,
        batch_size: int,
        lr: float,
        weight_decay: float,
        class_balanced: bool,
        augment: bool,
        cache_dir: str | None,
        device: str,
        random_state: int = 0,
    ):
        if not phases:
            raise ValueError("phases must name at least one manifest column")
        self.phases = [str(p) for p in phases]
        self.slice_settings = dict(spacing_mm=spacing_mm, hu_window=tuple(hu_window), size=slice_size,
                                   depth=slice_depth, min_area_fraction=1.0)
        self.slice_size = slice_size
        self.resnet_blocks = tuple(int(b) for b in resnet_blocks)
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.class_balanced = class_balanced
        self.augment = augment
        self.cache_dir = cache_dir
        self.device = torch.device(device)
        self.random_state = random_state

    def input_functions(self) -> list[Callable[[Mapping], object]]:
        """A case's tumour slices in each phase it has."""
        return [functools.partial(phase_slices, column=phase, cache_dir=self.cache_dir, **self.slice_settings)
                for phase in self.phases]

    def _inputs(self, cases: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """Largest tumour slices (n, P, H, W), zero for a missing phase, and presence (n, P)."""
        unknown = [p for p in self.phases if p not in cases.columns]
        if unknown:
            raise ValueError(f"phase column(s) {unknown} not in the manifest")
        images = np.zeros((len(cases), len(self.phases), self.slice_size, self.slice_size), np.float32)
        present = np.zeros((len(cases), len(self.phases)), bool)
        for i, row in enumerate(ct_inputs.rows(cases)):
            for p, phase in enumerate(self.phases):
                slices = phase_slices(row, column=phase, cache_dir=self.cache_dir, **self.slice_settings)
                if slices:
                    images[i, p] = slices["slices"][slices["areas"].argmax()]
                    present[i, p] = True
            if not present[i].any():
                raise CaseError(str(row["case_id"]), f"none of the phases {self.phases} has an image")
        return torch.from_numpy(images), torch.from_numpy(present)

    def _augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = random_flips(images, (2, 3), generator)
        turns = torch.randint(0, 4, (len(images),), generator=generator)
        return torch.stack([torch.rot90(image, int(k), dims=(1, 2)) for image, k in zip(images, turns)])

    def fit(self, cases: pd.DataFrame, y: np.ndarray) -> "MultiPhasePipeline":
        """Train the per-phase ResNets and the fusion MLP on these cases."""
        labels = torch.as_tensor(np.asarray(y, dtype=np.int64))
        images, present = self._inputs(cases)
        counts = torch.bincount(labels, minlength=2).clamp(min=1).double()
        weight = (len(labels) / (2 * counts)).float() if self.class_balanced else None
        with seeded(self.random_state):
            generator = torch.Generator().manual_seed(self.random_state)
            model = MultiPhaseResNet(len(self.phases), self.hidden_dim, dropout=self.dropout,
                                     resnet_blocks=self.resnet_blocks).to(self.device)
            optimiser = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            loss_fn = nn.CrossEntropyLoss(weight=None if weight is None else weight.to(self.device))

            def batch_loss(batch: np.ndarray) -> torch.Tensor:
                x = self._augment(images[batch], generator) if self.augment else images[batch]
                return loss_fn(model(x.to(self.device), present[batch].to(self.device)),
                               labels[batch].to(self.device))

            self.history_ = train_epochs(
                model, optimiser, self.epochs,
                lambda: shuffled_batches(len(labels), self.batch_size, generator), batch_loss,
            )
        self.model_ = model.eval()
        return self

    def predict_proba(self, cases: pd.DataFrame) -> np.ndarray:
        """P(y = 1) per case."""
        images, present = self._inputs(cases)
        logits = predict_in_batches(lambda x, m: self.model_(x.to(self.device), m.to(self.device)).cpu(),
                                    [images, present], self.batch_size)
        return torch.softmax(logits, dim=1)[:, 1].numpy().astype(np.float64)


@PIPELINES.register("multiphase")
def multiphase(**kwargs) -> MultiPhasePipeline:
    """The multi-phase CNN with its config kwargs (see :class:`MultiPhasePipeline`)."""
    return MultiPhasePipeline(**kwargs)
