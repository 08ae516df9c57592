"""Sub-models shared by the pipelines of one fold.

Several pipelines train the same network on the same training cases: ``rgcnn``,
``cr_*`` and ``cr_tr_*`` the same RGCNN, ``simclr_rf`` and ``simclr_mlp`` the same SimCLR
encoder. Fits are seeded and deterministic, so inside :func:`shared_fits` (one fold of
the evaluation) :func:`fit_once` trains each distinct one once and hands the same
fitted object to every pipeline that asks; outside it every call trains. A key holds
everything the fit depends on: its settings, seed, the training cases' files and labels.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import TypeVar

import numpy as np
import pandas as pd

T = TypeVar("T")
_FITS: ContextVar[dict | None] = ContextVar("shared_fits", default=None)


@contextmanager
def fresh_dict(var: ContextVar[dict | None]) -> Iterator[None]:
    """Inside the block ``var`` holds a new empty dict (a cache of the block); afterwards its old value."""
    token = var.set({})
    try:
        yield
    finally:
        var.reset(token)


def shared_fits() -> AbstractContextManager[None]:
    """Inside the block, equal :func:`fit_once` keys get one fitted object; it is dropped afterwards."""
    return fresh_dict(_FITS)


def fit_once(key: Mapping, fit: Callable[[], T]) -> T:
    """``fit()``, or inside :func:`shared_fits` the result of an earlier call with an equal ``key``."""
    fits = _FITS.get()
    if fits is None:
        return fit()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    if digest not in fits:
        fits[digest] = fit()
    return fits[digest]


def training_key(cases: pd.DataFrame, columns: Sequence[str], y: np.ndarray | None = None) -> dict:
    """The training data part of a key: case ids, their files in ``columns``, and the labels (if used)."""
    return {
        "cases": cases[["case_id", *columns]].astype(str).to_numpy().tolist(),
        "y": None if y is None else np.asarray(y, dtype=int).tolist(),
    }
