"""Traditional radiomics (TR) pipelines of the RGCNN paper: ``tr_rf`` and ``tr_xgb``.

Whole-tumour pyradiomics features (:func:`~radiopath.classification.ct_inputs.scalar_radiomics`,
cached per case: extraction is not fitted) -> StandardScaler -> PCA -> SMOTE -> random
forest or XGBoost. The fitted steps form one imbalanced-learn ``Pipeline``, so scaling,
PCA and SMOTE are learnt from the training cases passed to ``fit`` only, and SMOTE only
resamples during ``fit``, never when scoring. A fitted ``tr_rf`` reports the importance of
its principal components (:mod:`radiopath.classification.pc_importance`, the paper's Fig. 3)
as its ``pc_importance`` table.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline
from sklearn.base import ClassifierMixin
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier

from radiopath.classification import ct_inputs, pc_importance
from radiopath.classification.base import PIPELINES, CasePipeline
from radiopath.errors import CaseError

log = logging.getLogger(__name__)


class TraditionalRadiomicsPipeline(CasePipeline):
    """Scalar radiomics -> scaler -> PCA -> SMOTE -> a classifier built by ``make_classifier()``.

    ``permutation_repeats``: repeats of the permutation importance in the ``pc_importance`` table
    (random forests only; ``None`` for other classifiers).
    """

    def __init__(self, *, name: str, make_classifier: Callable[[], ClassifierMixin], radiomics: Mapping,
                 pca_components: int, smote_k_neighbors: int, permutation_repeats: int | None, random_state: int):
        if pca_components < 1 or smote_k_neighbors < 1:
            raise ValueError(f"pca_components and smote_k_neighbors must be >= 1, got {pca_components}, "
                             f"{smote_k_neighbors}")
        if permutation_repeats is not None and permutation_repeats < 1:
            raise ValueError(f"{name}: permutation_repeats must be >= 1, got {permutation_repeats}")
        self.name = name
        self.make_classifier = make_classifier
        self.radiomics = dict(radiomics)
        self.pca_components = int(pca_components)
        self.smote_k_neighbors = int(smote_k_neighbors)
        self.permutation_repeats = permutation_repeats
        self.random_state = int(random_state)
        self.feature_names: list[str] | None = None

    def input_functions(self) -> list[Callable[[Mapping], object]]:
        """The scalar radiomics of a case."""
        return [functools.partial(ct_inputs.scalar_radiomics, **self.radiomics)]

    def features(self, cases: pd.DataFrame) -> np.ndarray:
        """``(n, D)`` radiomic features of the cases (from the cache when present)."""
        vectors = []
        for row in ct_inputs.rows(cases):
            arrays = ct_inputs.scalar_radiomics(row, **self.radiomics)
            names = [str(n) for n in arrays["names"]]
            if self.feature_names is None:
                self.feature_names = names
            elif names != self.feature_names:
                raise CaseError(row["case_id"], "radiomic feature names differ from the other cases'")
            vectors.append(arrays["values"])
        return np.stack(vectors).astype(np.float64)

    def fit(self, cases: pd.DataFrame, y: np.ndarray) -> "TraditionalRadiomicsPipeline":
        """Extract (or load) the training cases' features and fit scaler, PCA, SMOTE and classifier."""
        y = np.asarray(y, dtype=int)
        x = self.features(cases)
        counts = np.bincount(y, minlength=2)
        if counts.min() < 2:
            raise ValueError(f"{self.name}: training part has {counts[0]} negative and {counts[1]} positive cases; "
                             "SMOTE needs at least 2 of each")
        components = min(self.pca_components, *x.shape)
        neighbours = min(self.smote_k_neighbors, int(counts.min()) - 1)
        if (components, neighbours) != (self.pca_components, self.smote_k_neighbors):
            log.warning("%s: %d training cases x %d features, minority %d: PCA keeps %d components, SMOTE uses %d "
                        "neighbours", self.name, *x.shape, counts.min(), components, neighbours)
        self.model_ = Pipeline([
            ("scale", StandardScaler()),
            ("pca", PCA(n_components=components, random_state=self.random_state)),
            ("smote", SMOTE(k_neighbors=neighbours, random_state=self.random_state)),
            ("classifier", self.make_classifier()),
        ])
        self.model_.fit(x, y)
        self.pc_importance_ = self._pc_importance(x, y)
        return self

    def _pc_importance(self, x: np.ndarray, y: np.ndarray) -> pd.DataFrame | None:
        """The forest's ``pc_importance`` table on the training cases; None for other classifiers."""
        forest = self.model_.named_steps["classifier"]
        if not isinstance(forest, RandomForestClassifier):
            return None
        pca = self.model_.named_steps["pca"]
        return pc_importance.pc_importance(
            forest=forest, components=pca.transform(self.model_.named_steps["scale"].transform(x)), y=y,
            blocks=["tr"] * pca.n_components_, explained=pca.explained_variance_ratio_,
            repeats=self.permutation_repeats, random_state=self.random_state)

    def fitted_tables(self) -> dict[str, pd.DataFrame]:
        """``pc_importance`` (random forest): per principal component, its explained variance ratio, the
        forest's impurity importance and the permutation importance on the training cases."""
        return {} if self.pc_importance_ is None else {"pc_importance": self.pc_importance_}

    def predict_proba(self, cases: pd.DataFrame) -> np.ndarray:
        """P(y = 1) per case from the fitted steps (SMOTE is skipped when scoring)."""
        if not hasattr(self, "model_"):
            raise RuntimeError(f"{self.name}: predict_proba before fit")
        proba = self.model_.predict_proba(self.features(cases))
        return proba[:, list(self.model_.classes_).index(1)]


@PIPELINES.register("tr_rf")
def tr_rf(*, radiomics: Mapping, pca_components: int, smote_k_neighbors: int, classifier: Mapping,
          permutation_repeats: int, random_state: int = 0) -> TraditionalRadiomicsPipeline:
    """TR with a random forest; ``classifier``: ``RandomForestClassifier`` arguments."""
    return TraditionalRadiomicsPipeline(
        name="tr_rf", make_classifier=lambda: RandomForestClassifier(random_state=random_state, **classifier),
        radiomics=radiomics, pca_components=pca_components, smote_k_neighbors=smote_k_neighbors,
        permutation_repeats=permutation_repeats, random_state=random_state)


@PIPELINES.register("tr_xgb")
def tr_xgb(*, radiomics: Mapping, pca_components: int, smote_k_neighbors: int, classifier: Mapping,
           random_state: int = 0) -> TraditionalRadiomicsPipeline:
    """TR with gradient-boosted trees; ``classifier``: ``xgboost.XGBClassifier`` arguments."""
    return TraditionalRadiomicsPipeline(
        name="tr_xgb", make_classifier=lambda: XGBClassifier(random_state=random_state, **classifier),
        radiomics=radiomics, pca_components=pca_components, smote_k_neighbors=smote_k_neighbors,
        permutation_repeats=None, random_state=random_state)
