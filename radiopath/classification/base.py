"""The contract every classification pipeline keeps, and the registry that builds them by name.

A pipeline sees whole cases, not feature matrices: ``cases`` is a slice of the cohort
manifest (``case_id``, absolute ``ct``/``mask`` paths, clinical columns, ...), so each
pipeline owns everything it fits (radiomics, PCA, SMOTE, a CNN) and the evaluation
can guarantee that nothing is fitted outside the training part: it only ever calls
``fit`` on training cases and ``predict_proba`` on held-out ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Callable

import numpy as np
import pandas as pd


class CasePipeline(ABC):
    """scikit-learn-style estimator over cohort rows.

    ``fit(cases, y)`` learns from the training cases only; ``predict_proba(cases)``
    returns P(positive class) per case, shape ``(n,)``. ``random_state`` seeds
    everything random inside the pipeline.
    """

    name: str = ""

    @abstractmethod
    def fit(self, cases: pd.DataFrame, y: np.ndarray) -> "CasePipeline":
        """Fit every step on these training cases and labels (0/1)."""

    @abstractmethod
    def predict_proba(self, cases: pd.DataFrame) -> np.ndarray:
        """P(y = 1) for each case, shape (n,)."""

    def input_functions(self) -> list[Callable[[Mapping], object]]:
        """Per-case inputs that nothing is fitted to (each ``f(row)``, cached on disk), so the
        evaluation can compute them for every case up front, in parallel; none by default."""
        return []


_PIPELINES: dict[str, Callable[..., CasePipeline]] = {}


def register_pipeline(name: str) -> Callable:
    """Decorator: register ``builder(**kwargs) -> CasePipeline`` under ``name``."""

    def decorate(builder: Callable[..., CasePipeline]) -> Callable[..., CasePipeline]:
        if name in _PIPELINES:
            raise ValueError(f"classification pipeline {name!r} is registered twice")
        _PIPELINES[name] = builder
        return builder

    return decorate


def build_pipeline(name: str, **kwargs) -> CasePipeline:
    """Build the pipeline registered as ``name`` with its config ``kwargs``."""
    _load_builtin()
    if name not in _PIPELINES:
        raise KeyError(f"unknown classification pipeline {name!r}; known: {', '.join(list_pipelines())}")
    return _PIPELINES[name](**kwargs)


def list_pipelines() -> list[str]:
    """Names of the registered pipelines."""
    _load_builtin()
    return sorted(_PIPELINES)


def _load_builtin() -> None:
    # Importing a pipeline module registers it; modules are imported lazily because
    # the deep pipelines pull in torch models the radiomics ones never need.
    import importlib
    import pkgutil

    import radiopath.classification.pipelines as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
