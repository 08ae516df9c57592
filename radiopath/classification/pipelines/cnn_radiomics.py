"""``cr_rf``, ``cr_tr_rf``, ``cr_xgb``, ``cr_tr_xgb``: CNN-based radiomics (CR), alone or with traditional
radiomics (TR), into a random forest or XGBoost.

CR (Tsai et al., Sec. 4.3) are the per-channel sums of an RGCNN's encoder feature maps
of layers ``cr_layers`` (default 0-3). With the default widths (8, 16, 24, 48) that is
8 + 16 + 24 + 48 = 96 features, the paper's count; other widths give their sum. The
RGCNN is trained inside :meth:`CNNRadiomicsPipeline.fit` on the training cases only.

Each feature block (CR; CR and TR) goes through StandardScaler -> PCA
(``pca_components`` each, so CR+TR has twice as many) and then, jointly, SMOTE -> random
forest (``*_rf``) or XGBoost (``*_xgb``), in one imbalanced-learn ``Pipeline``: scaling, PCA
and SMOTE are fitted on the training cases and SMOTE resamples during fit only.
``classifier`` holds ``RandomForestClassifier`` or ``xgboost.XGBClassifier`` arguments.

``rgcnn`` is the RGCNN as a pipeline spec, ``{pipeline: rgcnn, kwargs: {...}}`` with
:class:`~radiopath.classification.pipelines.rgcnn.RGCNNPipeline` kwargs (the configs
include ``conf/classify/pipeline/rgcnn.yaml`` there); TR are that RGCNN's scalar radiomics.

A fitted pipeline reports its RGCNN's ``voxel_maps`` table and, with a random forest, the
importance of its principal components (``pc_importance``: PC0-9 from CR, PC10-19 from TR
with 10 per block, as in the paper's Fig. 3; :mod:`radiopath.classification.pc_importance`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline
from sklearn.base import ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier

from radiopath.classification import pc_importance
from radiopath.classification.base import PIPELINES, CasePipeline
from radiopath.classification.pipelines.rgcnn import RGCNNPipeline

log = logging.getLogger(__name__)


class CNNRadiomicsPipeline(CasePipeline):
    """RGCNN map sums (and scalar radiomics) -> per-block scaler + PCA -> SMOTE -> ``make_classifier()``."""

    def __init__(
        self,
        *,
        name: str,
        with_tr: bool,
        make_classifier: Callable[[], ClassifierMixin],
        rgcnn: Mapping,
        cr_layers: Sequence[int],
        pca_components: int,
        smote_k_neighbors: int,
        permutation_repeats: int | None,
        random_state: int,
    ):
        if pca_components < 1 or smote_k_neighbors < 1:
            raise ValueError(f"pca_components and smote_k_neighbors must be >= 1, got {pca_components}, "
                             f"{smote_k_neighbors}")
        if permutation_repeats is not None and permutation_repeats < 1:
            raise ValueError(f"{name}: permutation_repeats must be >= 1, got {permutation_repeats}")
        spec = dict(rgcnn)
        if spec.get("pipeline", "rgcnn") != "rgcnn":
            raise ValueError(f"{name}: rgcnn must be an rgcnn pipeline spec, got pipeline={spec['pipeline']!r}")
        self.name = name
        self.with_tr = with_tr
        self.make_classifier = make_classifier
        self.rgcnn = dict(spec.get("kwargs") or {})
        self.cr_layers = tuple(int(layer) for layer in cr_layers)
        self.pca_components = int(pca_components)
        self.smote_k_neighbors = int(smote_k_neighbors)
        self.permutation_repeats = permutation_repeats
        self.random_state = int(random_state)

    def input_functions(self) -> list[Callable[[Mapping], object]]:
        """The RGCNN's per-case inputs (crop with maps, scalar radiomics)."""
        return RGCNNPipeline(**self.rgcnn, random_state=self.random_state).input_functions()

    def _features(self, cases: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray]]:
        """All feature columns side by side and the column indices of each block."""
        blocks = [self.rgcnn_.cnn_radiomics(cases, self.cr_layers)]
        if self.with_tr:
            blocks.append(self.rgcnn_.scalar_radiomics(cases).astype(np.float64))
        edges = np.cumsum([0] + [b.shape[1] for b in blocks])
        return np.concatenate(blocks, axis=1), [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:])]

    def fit(self, cases: pd.DataFrame, y: np.ndarray) -> "CNNRadiomicsPipeline":
        """Train the RGCNN on these cases, then fit the per-block PCA, SMOTE and the classifier."""
        y = np.asarray(y, dtype=int)
        counts = np.bincount(y, minlength=2)
        if counts.min() < 2:
            raise ValueError(f"{self.name}: training part has {counts[0]} negative and {counts[1]} positive cases; "
                             "SMOTE needs at least 2 of each")
        # Trained once per fold for every pipeline with these RGCNN settings (radiopath.classification.sharing).
        self.rgcnn_ = RGCNNPipeline(**self.rgcnn, random_state=self.random_state).fit(cases, y)
        x, blocks = self._features(cases)
        neighbours = min(self.smote_k_neighbors, int(counts.min()) - 1)
        transformers = []
        for label, columns in zip(("cr", "tr"), blocks):
            components = min(self.pca_components, len(y), len(columns))
            if components != self.pca_components or neighbours != self.smote_k_neighbors:
                log.warning("%s: %d training cases, %d %s features, minority %d: PCA keeps %d, SMOTE uses %d "
                            "neighbours", self.name, len(y), len(columns), label, counts.min(), components, neighbours)
            scaled_pca = Pipeline([
                ("scale", StandardScaler()),
                ("pca", PCA(n_components=components, random_state=self.random_state)),
            ])
            transformers.append((label, scaled_pca, columns))
        self.model_ = Pipeline([
            ("blocks", ColumnTransformer(transformers)),
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
        blocks = self.model_.named_steps["blocks"]
        pcas = [(label, blocks.named_transformers_[label].named_steps["pca"]) for label, _, _ in blocks.transformers]
        return pc_importance.pc_importance(
            forest=forest, components=blocks.transform(x), y=y,
            blocks=[label for label, pca in pcas for _ in range(pca.n_components_)],
            explained=np.concatenate([pca.explained_variance_ratio_ for _, pca in pcas]),
            repeats=self.permutation_repeats, random_state=self.random_state)

    def fitted_tables(self) -> dict[str, pd.DataFrame]:
        """The RGCNN's ``voxel_maps`` and, with a random forest, ``pc_importance`` (CR components first)."""
        tables = self.rgcnn_.fitted_tables()
        return tables if self.pc_importance_ is None else {**tables, "pc_importance": self.pc_importance_}

    def predict_proba(self, cases: pd.DataFrame) -> np.ndarray:
        """P(y = 1) from the classifier on the cases' CR (and TR) features."""
        x, _ = self._features(cases)
        proba = self.model_.predict_proba(x)
        return proba[:, list(self.model_.classes_).index(1)]


@PIPELINES.register("cr_rf")
def cr_rf(*, classifier: Mapping, permutation_repeats: int, random_state: int = 0, **kwargs) -> CNNRadiomicsPipeline:
    """CR alone, random forest; ``classifier``: ``RandomForestClassifier`` arguments."""
    return CNNRadiomicsPipeline(
        name="cr_rf", with_tr=False, make_classifier=lambda: RandomForestClassifier(random_state=random_state,
                                                                                   **classifier),
        permutation_repeats=permutation_repeats, random_state=random_state, **kwargs)


@PIPELINES.register("cr_tr_rf")
def cr_tr_rf(*, classifier: Mapping, permutation_repeats: int, random_state: int = 0,
             **kwargs) -> CNNRadiomicsPipeline:
    """CR and TR (the RGCNN's scalar radiomics settings) side by side, random forest."""
    return CNNRadiomicsPipeline(
        name="cr_tr_rf", with_tr=True, make_classifier=lambda: RandomForestClassifier(random_state=random_state,
                                                                                     **classifier),
        permutation_repeats=permutation_repeats, random_state=random_state, **kwargs)


@PIPELINES.register("cr_xgb")
def cr_xgb(*, classifier: Mapping, random_state: int = 0, **kwargs) -> CNNRadiomicsPipeline:
    """CR alone, XGBoost; ``classifier``: ``xgboost.XGBClassifier`` arguments."""
    return CNNRadiomicsPipeline(
        name="cr_xgb", with_tr=False, make_classifier=lambda: XGBClassifier(random_state=random_state, **classifier),
        permutation_repeats=None, random_state=random_state, **kwargs)


@PIPELINES.register("cr_tr_xgb")
def cr_tr_xgb(*, classifier: Mapping, random_state: int = 0, **kwargs) -> CNNRadiomicsPipeline:
    """CR and TR side by side, XGBoost; ``classifier``: ``xgboost.XGBClassifier`` arguments."""
    return CNNRadiomicsPipeline(
        name="cr_tr_xgb", with_tr=True, make_classifier=lambda: XGBClassifier(random_state=random_state,
                                                                             **classifier),
        permutation_repeats=None, random_state=random_state, **kwargs)
