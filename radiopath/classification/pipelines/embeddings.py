"""``simclr_rf`` and ``simclr_mlp``: SimCLR slice embeddings + clinical features + tumour size.

After the multimodal RF/MLP paper: a ResNet-18 (torchvision, random init) is trained
self-supervised with SimCLR (NT-Xent between two augmented views: random resized crop,
flips, rotation, Gaussian blur) on axial tumour slices of the *training* cases
(:func:`~radiopath.classification.ct_inputs.tumour_slices`). A patient's embedding is
the mean 512-d encoder output over its tumour slices. With the clinical columns (age;
sex as 1 = M) and the tumour size (missing values imputed with training medians), an
optional PCA of the embedding (``pca_components``, 20 in the paper, ``null`` = none) and
min-max scaling, a random forest or an MLP learns three classes: 0 benign, 1 malignant
and indolent, 2 malignant and aggressive (from the manifest's ``malignant`` and
``aggressive`` columns; a case whose class is unknown trains SimCLR only).
``target`` picks what :meth:`predict_proba` returns: ``malignant`` gives
P(malignant) = 1 - P(benign), ``aggressive`` gives P(aggressive) = P(malignant and
aggressive). Within one fold of the evaluation, ``simclr_rf`` and ``simclr_mlp`` with the
same SimCLR settings share one trained encoder and its patient embeddings
(:mod:`radiopath.classification.sharing`).

``select_features: k`` keeps the k classifier inputs (embedding components, clinical columns,
size) that a random forest fitted on the training cases ranks highest by impurity importance
(the paper's reduction of its clinical features; ``SelectFromModel``, a step of the fitted
scikit-learn pipeline, so it only ever sees training rows); ``null`` keeps them all. Each fit
reports its ``feature_importance`` table (:meth:`~SimCLREmbeddingPipeline.fitted_tables`): one
row per classifier input with its group (``embedding``, ``clinical``, ``size``), the final
forest's impurity importance (RF only), the permutation importance on the training cases (drop
in the ROC AUC of the ``target`` probability) and whether the selection kept it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import SelectFromModel
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.metrics import roc_auc_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler
from torchvision.transforms import v2

from radiopath.classification import ct_inputs
from radiopath.classification.base import PIPELINES, CasePipeline
from radiopath.classification.losses import NTXentLoss
from radiopath.classification.nets import SimCLR
from radiopath.classification.nets.fitting import predict_in_batches, seeded, shuffled_batches, train_epochs
from radiopath.classification.sharing import fit_once, training_key

TARGETS = ("malignant", "aggressive")
CLASSIFIERS = ("rf", "mlp")


def three_classes(cases: pd.DataFrame) -> np.ndarray:
    """0 benign, 1 malignant-indolent, 2 malignant-aggressive, -1 unknown, per case."""
    malignant = pd.to_numeric(cases["malignant"], errors="coerce").to_numpy(dtype=float)
    aggressive = (pd.to_numeric(cases["aggressive"], errors="coerce").to_numpy(dtype=float)
                  if "aggressive" in cases else np.full(len(cases), np.nan))
    classes = np.full(len(cases), -1)
    classes[malignant == 0] = 0
    classes[(malignant == 1) & (aggressive == 0)] = 1
    classes[(malignant == 1) & (aggressive == 1)] = 2
    return classes


class SliceEmbedder:
    """A trained SimCLR network and the patient embeddings it has given (mean encoder output over a case's slices)."""

    def __init__(self, model: SimCLR, history: list[float], batch_size: int, device: torch.device):
        self.model = model.eval()
        self.history = history
        self.batch_size = batch_size
        self.device = device
        self._embeddings: dict[str, np.ndarray] = {}

    def embed(self, keys: list[str], slices: Callable[[int], torch.Tensor]) -> np.ndarray:
        """(n, 512) embeddings of the cases ``keys`` (their files); ``slices(i)`` gives case i's (S, 1, H, W).

        The cases not embedded before go through the encoder together, in full batches.
        """
        missing = list({key: i for i, key in enumerate(keys) if key not in self._embeddings}.values())
        if missing:
            stacks = [slices(i) for i in missing]
            forward = lambda x: self.model.embed(x.to(self.device)).cpu()  # noqa: E731
            outputs = predict_in_batches(forward, [torch.cat(stacks)], self.batch_size)
            for i, part in zip(missing, torch.split(outputs, [len(stack) for stack in stacks])):
                self._embeddings[keys[i]] = part.mean(dim=0).numpy()
        return np.stack([self._embeddings[key] for key in keys])


class SimCLREmbeddingPipeline(CasePipeline):
    """SimCLR embeddings, clinical features and tumour size -> RF or MLP over three classes.

    Every setting comes from ``conf/classify/pipeline/simclr_{rf,mlp}.yaml``; ``classifier_params``
    are the ``RandomForestClassifier`` or ``MLPClassifier`` arguments, which the two builders make
    from that file's ``rf_*`` or ``mlp_*`` keys.
    """

    def __init__(
        self,
        *,
        classifier: str,
        classifier_params: Mapping,
        target: str,
        column: str,
        spacing_mm: float,
        hu_window: Sequence[float],
        slice_size: int,
        slice_depth: int,
        min_area_fraction: float,
        clinical: Sequence[str],
        size_column: str | None,
        resnet_blocks: Sequence[int],
        epochs: int,
        slices_per_case: int,
        batch_size: int,
        lr: float,
        weight_decay: float,
        temperature: float,
        projection_dim: int,
        crop_scale: Sequence[float],
        rotation_degrees: float,
        blur_sigma: Sequence[float],
        blur_kernel: int,
        pca_components: int | None,
        select_features: int | None,
        select_n_estimators: int,
        permutation_repeats: int,
        cache_dir: str | None,
        device: str,
        random_state: int = 0,
    ):
        if classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {classifier!r}")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        if select_features is not None and (isinstance(select_features, bool) or not isinstance(select_features, int)
                                            or select_features < 1):
            raise ValueError(f"select_features must be null or an integer >= 1, got {select_features!r}")
        if permutation_repeats < 1:
            raise ValueError(f"permutation_repeats must be >= 1, got {permutation_repeats}")
        self.name = f"simclr_{classifier}"
        self.classifier = classifier
        self.target = target
        self.slice_settings = dict(column=column, spacing_mm=spacing_mm, hu_window=tuple(hu_window),
                                   size=slice_size, depth=slice_depth, min_area_fraction=min_area_fraction)
        self.clinical = [str(c) for c in clinical]
        self.size_column = size_column
        self.resnet_blocks = tuple(int(b) for b in resnet_blocks)
        self.epochs = epochs
        self.slices_per_case = slices_per_case
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.temperature = temperature
        self.projection_dim = projection_dim
        self.augment_settings = dict(crop_scale=tuple(crop_scale), rotation_degrees=rotation_degrees,
                                     blur_sigma=tuple(blur_sigma), blur_kernel=blur_kernel)
        self.augment = v2.Compose([
            v2.RandomResizedCrop(slice_size, scale=tuple(crop_scale), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomRotation(rotation_degrees),
            v2.GaussianBlur(kernel_size=blur_kernel, sigma=tuple(blur_sigma)),
        ])
        self.pca_components = pca_components
        self.select_features = select_features
        self.select_n_estimators = select_n_estimators
        self.permutation_repeats = permutation_repeats
        self.classifier_params = dict(classifier_params)
        self.cache_dir = cache_dir
        self.device = torch.device(device)
        self.random_state = random_state

    # ------------------------------------------------------------------ SimCLR

    def input_functions(self) -> list[Callable[[Mapping], object]]:
        """A case's tumour slices."""
        return [functools.partial(ct_inputs.tumour_slices, cache_dir=self.cache_dir, **self.slice_settings)]

    def _case_slices(self, row: Mapping) -> torch.Tensor:
        """One case's tumour slices (S, 1, H, W)."""
        slices = ct_inputs.tumour_slices(row, cache_dir=self.cache_dir, **self.slice_settings)["slices"]
        return torch.from_numpy(slices)[:, None]

    def _views(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.augment(image) for image in images]).to(self.device)

    def _simclr_key(self, cases: pd.DataFrame) -> dict:
        """What the SimCLR encoder depends on (not the classifier): settings, seed, training cases."""
        settings = {name: getattr(self, name) for name in (
            "slice_settings", "resnet_blocks", "epochs", "slices_per_case", "batch_size", "lr", "weight_decay",
            "temperature", "projection_dim", "augment_settings", "device", "random_state")}
        return {"fit": "simclr", "settings": settings,
                **training_key(cases, [self.slice_settings["column"], "mask"])}

    def _train_simclr(self, slices: list[torch.Tensor]) -> SliceEmbedder:
        generator = torch.Generator().manual_seed(self.random_state)
        model = SimCLR(in_channels=1, projection_dim=self.projection_dim, resnet_blocks=self.resnet_blocks
                       ).to(self.device)
        optimiser = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = NTXentLoss(self.temperature)

        def epoch_batches() -> list[torch.Tensor]:
            # A few random slices per case each epoch: big tumours must not dominate the epoch.
            pool = torch.cat([
                s[torch.randperm(len(s), generator=generator)[: self.slices_per_case]] for s in slices
            ])
            return [pool[batch] for batch in shuffled_batches(len(pool), self.batch_size, generator)]

        def batch_loss(images: torch.Tensor) -> torch.Tensor:
            return loss_fn(model(self._views(images)), model(self._views(images)))

        history = train_epochs(model, optimiser, self.epochs, epoch_batches, batch_loss)
        return SliceEmbedder(model, history, self.batch_size, self.device)

    def embeddings(self, cases: pd.DataFrame) -> np.ndarray:
        """Patient embeddings (n, 512): the mean encoder output over each case's tumour slices."""
        column = self.slice_settings["column"]
        rows = ct_inputs.rows(cases)
        keys = [f"{row[column]}|{row['mask']}" for row in rows]
        return self.simclr_.embed(keys, lambda i: self._case_slices(rows[i])).astype(np.float64)

    # ------------------------------------------------------------------ tabular model

    def _table(self, cases: pd.DataFrame) -> np.ndarray:
        """Embedding, clinical and size columns side by side (NaN where a value is missing)."""
        columns = [self.embeddings(cases)]
        for name in self.clinical:
            values = cases[name]
            if name == "sex":
                values = values.astype(str).str.upper().str[0].map({"M": 1.0, "F": 0.0})
            columns.append(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)[:, None])
        if self.size_column:
            columns.append(pd.to_numeric(cases[self.size_column], errors="coerce").to_numpy(dtype=float)[:, None])
        return np.concatenate(columns, axis=1)

    def _model(self, n_train: int, embed_dim: int, n_columns: int) -> Pipeline:
        embedding = ("passthrough" if self.pca_components is None else
                     PCA(n_components=min(self.pca_components, n_train, embed_dim), random_state=self.random_state))
        blocks = ColumnTransformer([
            ("embedding", embedding, np.arange(embed_dim)),
            ("clinical", SimpleImputer(strategy="median", keep_empty_features=True), np.arange(embed_dim, n_columns)),
        ])
        n_inputs = (embed_dim if self.pca_components is None else embedding.n_components) + n_columns - embed_dim
        if self.select_features is not None and self.select_features > n_inputs:
            raise ValueError(f"{self.name}: select_features={self.select_features} but the classifier has only "
                             f"{n_inputs} input features")
        # threshold=-inf: exactly the top k by importance, however small their importances are.
        select = ("passthrough" if self.select_features is None else SelectFromModel(
            RandomForestClassifier(n_estimators=self.select_n_estimators, random_state=self.random_state),
            max_features=self.select_features, threshold=-np.inf))
        make = RandomForestClassifier if self.classifier == "rf" else MLPClassifier
        model = make(random_state=self.random_state, **self.classifier_params)
        return Pipeline([("blocks", blocks), ("scale", MinMaxScaler()), ("select", select), ("classifier", model)])

    def _inputs(self) -> tuple[list[str], list[str], np.ndarray]:
        """The fitted classifier's candidate inputs (embedding components, clinical, size): names, groups, and
        which of them the selection kept (all without ``select_features``)."""
        n_embedding = self.model_.named_steps["blocks"].output_indices_["embedding"].stop
        prefix = "embedding_" if self.pca_components is None else "embedding_pc"
        names = [f"{prefix}{i}" for i in range(n_embedding)] + self.clinical
        groups = ["embedding"] * n_embedding + ["clinical"] * len(self.clinical)
        if self.size_column:
            names.append(self.size_column)
            groups.append("size")
        kept = (np.ones(len(names), dtype=bool) if self.select_features is None
                else self.model_.named_steps["select"].get_support())
        return names, groups, kept

    def _target_proba(self, model: Pipeline, x: np.ndarray) -> np.ndarray:
        """``target`` probability from a three-class ``model`` (a class absent from training gets 0)."""
        proba = np.zeros((len(x), 3))
        proba[:, model.classes_] = model.predict_proba(x)
        return 1.0 - proba[:, 0] if self.target == "malignant" else proba[:, 2]

    # ------------------------------------------------------------------ fit / predict

    def fit(self, cases: pd.DataFrame, y: np.ndarray) -> "SimCLREmbeddingPipeline":
        """SimCLR on the training cases' slices, then the selection (``select_features``) and the three-class
        classifier; fails if ``select_features`` exceeds the classifier's inputs."""
        classes = three_classes(cases)
        known = classes >= 0
        derived = (classes > 0) if self.target == "malignant" else (classes == 2)
        if (derived[known] != np.asarray(y, dtype=int)[known]).any():
            raise ValueError(f"{self.name}: y does not match the '{self.target}' target derived from the "
                             "malignant/aggressive columns; set target to the task's label")
        if known.sum() < 2:
            raise ValueError(f"{self.name}: fewer than two training cases with a known three-class label")
        with seeded(self.random_state):
            self.simclr_ = fit_once(self._simclr_key(cases), lambda: self._train_simclr(
                [self._case_slices(row) for row in ct_inputs.rows(cases)]))
        table = self._table(cases)
        embed_dim = self.simclr_.model.encoder.out_dim
        self.model_ = self._model(int(known.sum()), embed_dim, table.shape[1])
        with warnings.catch_warnings():
            # A small MLP on a few dozen cases may stop at max_iter; the fit is still usable.
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model_.fit(table[known], classes[known])
        names, _, kept = self._inputs()
        self.selected_features_ = [name for name, keep in zip(names, kept) if keep]
        # The selection's inputs (model_[:-2]: blocks and scaling) for the importance table, computed on demand:
        # tuning fits (nested CV) never report one.
        self._importance_inputs_ = (self.model_[:-2].transform(table[known]), derived[known].astype(int))
        return self

    def predict_proba(self, cases: pd.DataFrame) -> np.ndarray:
        """P(malignant) = 1 - P(benign) or P(aggressive) = P(malignant and aggressive), per ``target``."""
        return self._target_proba(self.model_, self._table(cases))

    def feature_importance(self) -> pd.DataFrame:
        """The ``feature_importance`` table: one row per candidate classifier input (see the module docstring).

        ``impurity_importance`` is the final forest's (NaN for the MLP and for inputs the selection dropped),
        ``selection_importance`` the ranking forest's (NaN without selection); the permutation columns are NaN
        when the training cases have one class of the target (no ROC AUC).
        """
        x, y = self._importance_inputs_
        names, groups, kept = self._inputs()
        classifier = self.model_.named_steps["classifier"]
        impurity = np.full(len(names), np.nan)
        if isinstance(classifier, RandomForestClassifier):
            impurity[kept] = classifier.feature_importances_
        ranking = (np.full(len(names), np.nan) if self.select_features is None
                   else self.model_.named_steps["select"].estimator_.feature_importances_)
        permuted_mean = permuted_std = np.full(len(names), np.nan)
        if len(np.unique(y)) == 2:
            # The selection's input columns are permuted: one it dropped changes nothing and scores 0.
            permuted = permutation_importance(
                self.model_[-2:], x, y,  # the selection and the classifier
                scoring=lambda model, x_, y_: roc_auc_score(y_, self._target_proba(model, x_)),
                n_repeats=self.permutation_repeats, random_state=self.random_state)
            permuted_mean, permuted_std = permuted.importances_mean, permuted.importances_std
        return pd.DataFrame({
            "feature": names,
            "group": groups,
            "impurity_importance": impurity,
            "permutation_importance": permuted_mean,
            "permutation_std": permuted_std,
            "selected": kept,
            "selection_importance": ranking,
        })

    def fitted_tables(self) -> dict[str, pd.DataFrame]:
        """This fit's ``feature_importance`` table (computed here, on the training cases kept by ``fit``)."""
        return {"feature_importance": self.feature_importance()}


@PIPELINES.register("simclr_rf")
def simclr_rf(*, rf_n_estimators: int, rf_max_depth: int | None, **kwargs) -> SimCLREmbeddingPipeline:
    """SimCLR embeddings + clinical + size into a random forest (see :class:`SimCLREmbeddingPipeline`)."""
    return SimCLREmbeddingPipeline(classifier="rf", classifier_params={
        "n_estimators": rf_n_estimators, "max_depth": rf_max_depth}, **kwargs)


@PIPELINES.register("simclr_mlp")
def simclr_mlp(*, mlp_hidden: Sequence[int], mlp_lr: float, mlp_weight_decay: float, mlp_max_iter: int,
               **kwargs) -> SimCLREmbeddingPipeline:
    """SimCLR embeddings + clinical + size into an MLP (see :class:`SimCLREmbeddingPipeline`)."""
    return SimCLREmbeddingPipeline(classifier="mlp", classifier_params={
        "hidden_layer_sizes": tuple(mlp_hidden), "learning_rate_init": mlp_lr, "alpha": mlp_weight_decay,
        "max_iter": mlp_max_iter}, **kwargs)
