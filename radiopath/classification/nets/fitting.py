"""Small helpers the deep pipelines share: seeding, batches, flips, the epoch loop."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler


@contextmanager
def seeded(random_state: int) -> Iterator[None]:
    """Seed torch's global CPU generator inside the block and restore it afterwards.

    torchvision's random transforms and weight initialisation draw from the global
    generator; forking it makes a fit depend on ``random_state`` only and leaves
    nothing behind for the next fit.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(random_state))
        yield


def balanced_batches(labels: np.ndarray, batch_size: int, generator: torch.Generator) -> list[np.ndarray]:
    """One epoch of index batches drawn with replacement, each class equally likely.

    ``torch.utils.data.WeightedRandomSampler`` with weights ``1 / count(class)``; the
    epoch has as many draws as there are cases.
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.double)
    sampler = WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)
    order = np.fromiter(iter(sampler), dtype=np.int64, count=len(labels))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> list[np.ndarray]:
    """One epoch of index batches: a random permutation cut into ``batch_size`` pieces."""
    order = torch.randperm(n, generator=generator).numpy()
    return [order[start:start + batch_size] for start in range(0, n, batch_size)]


def random_flips(x: torch.Tensor, dims: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Flip each sample of ``x`` along each of ``dims`` with probability 1/2."""
    x = x.clone()
    for dim in dims:
        flip = torch.rand(len(x), generator=generator) < 0.5
        if flip.any():
            x[flip] = x[flip].flip(dim)
    return x


@torch.inference_mode()
def predict_in_batches(forward, inputs: list[torch.Tensor], batch_size: int) -> torch.Tensor:
    """``forward(*batch)`` over aligned ``inputs`` in batches, concatenated."""
    n = len(inputs[0])
    return torch.cat([forward(*(t[start:start + batch_size] for t in inputs)) for start in range(0, n, batch_size)])


def train_epochs(model: torch.nn.Module, optimiser: torch.optim.Optimizer, epochs: int,
                 epoch_batches: Callable[[], Iterable[Sized]], batch_loss: Callable[[Sized], torch.Tensor]
                 ) -> list[float]:
    """Train for ``epochs`` epochs; returns the mean batch loss of each epoch (NaN if none ran).

    ``epoch_batches()`` is called once per epoch and gives that epoch's batches;
    ``batch_loss(batch)`` computes a batch's loss. Batches of one sample are skipped:
    BatchNorm and the contrastive losses need at least two.
    """
    history = []
    for _ in range(epochs):
        model.train()
        losses = []
        for batch in epoch_batches():
            if len(batch) < 2:
                continue
            loss = batch_loss(batch)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        history.append(float(np.mean(losses)) if losses else float("nan"))
    return history
