"""The contract every classification pipeline keeps, and the registry that builds them by name.

``PIPELINES.create(name, **kwargs)`` builds one (``PIPELINES.names()`` lists them); a new
pipeline module registers its pipelines with ``@PIPELINES.register(name)`` and is added to
the registry's built-in modules below.

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

from radiopath.registry import Registry


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

    def fitted_tables(self) -> dict[str, pd.DataFrame]:
        """Tables a fitted pipeline reports about its fit (e.g. ``pc_importance``), by name; none by default.

        Called after ``fit``; the evaluation writes each fold's tables beside its predictions.
        """
        return {}


# Imported on first use: the deep pipelines pull in torch models the radiomics ones never need.
PIPELINES = Registry("classification pipeline", builtin_modules=tuple(
    f"radiopath.classification.pipelines.{module}"
    for module in ("radiomics", "cnn_radiomics", "embeddings", "multiphase", "rgcnn")))
