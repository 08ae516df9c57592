"""``rgcnn``: the Radiomics-Guided CNN of Tsai et al. on 6-channel 3-D tumour crops.

Input per case (:func:`radiopath.classification.ct_inputs.tumour_volume`): a
``crop_size^3`` crop at ``spacing_mm`` around the tumour centroid with the CT (HU window
-> [0, 1]) and pyradiomics voxel-based maps as channels, and the whole-tumour
scalar radiomics (:func:`~radiopath.classification.ct_inputs.scalar_radiomics`).

The maps are the ``map_select`` best of ``map_candidates``, chosen in :meth:`RGCNNPipeline.fit`
on the training cases only: each candidate's whole-tumour value
(:func:`~radiopath.classification.ct_inputs.tumour_values`, on the maps' crop and bins) is
scored by ``|AUC - 0.5|`` against the training labels (:func:`select_maps`), a rank-based
criterion that the skewed scales of radiomic features do not distort. The paper chose its five
maps by CNN experiments on its own data; this is that choice made inside each training part.
``map_select: null`` uses the fixed list ``map_features`` instead. A fit's candidates, scores
and choice are its ``voxel_maps`` table (:meth:`RGCNNPipeline.fitted_tables`); the maps of a
choice are computed per case when first needed, then cached. The
network (:class:`~radiopath.classification.nets.RGCNN`) is trained with
``focal(gamma) + contrastive_weight * SupCon(temperature)`` between the image and
radiomics projections, on class-balanced batches (``WeightedRandomSampler``) with
random flips. Only the image encoder and classifier predict.

Everything fitted (map channel scaling, radiomics scaling, the network) is learnt in
:meth:`RGCNNPipeline.fit` from the cases it is given; the per-case inputs are not
fitted and are cached on disk (``cache_dir``). Within one fold of the evaluation, an
RGCNN with the same settings, seed and training cases is trained once and shared with
the CNN-radiomics pipelines (:mod:`radiopath.classification.sharing`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from radiopath.classification import ct_inputs
from radiopath.classification.base import PIPELINES, CasePipeline
from radiopath.classification.losses import FocalLoss, SupConLoss
from radiopath.classification.nets import RGCNN
from radiopath.classification.nets.fitting import (
    balanced_batches, predict_in_batches, random_flips, seeded, train_epochs,
)
from radiopath.classification.sharing import fit_once, training_key

# Standardised radiomics beyond this many standard deviations are clipped: one outlying
# training case must not dominate the projector's input scale.
RADIOMICS_CLIP = 10.0


class RGCNNPipeline(CasePipeline):
    """3-D CNN on CT + radiomic maps, aligned with scalar radiomics; P(y = 1) from the image branch."""

    name = "rgcnn"

    def __init__(
        self,
        *,
        column: str,
        crop_size: int,
        spacing_mm: float,
        hu_window: Sequence[float],
        map_select: int | None,
        map_candidates: Mapping[str, Sequence[str] | None],
        map_features: Mapping[str, Sequence[str]],
        map_kernel_radius: int,
        map_stride: int,
        map_bin_count: int,
        radiomics: Mapping,
        widths: Sequence[int],
        projection_dim: int,
        projector_hidden: int,
        dropout: float,
        focal_gamma: float,
        contrastive_weight: float,
        temperature: float,
        epochs: int,
        batch_size: int,
        lr: float,
        weight_decay: float,
        augment: bool,
        cache_dir: str | None,
        device: str,
        random_state: int = 0,  # the evaluation passes its seed; building for input_functions needs none
    ):
        if map_select is not None and map_select < 1:
            raise ValueError(f"map_select must be >= 1 or null (the fixed map_features), got {map_select}")
        self.map_select = None if map_select is None else int(map_select)
        self.map_candidates = {str(k): None if v is None else [str(n) for n in v] for k, v in map_candidates.items()}
        self.map_features = map_features
        self.volume_settings = dict(
            column=column, spacing_mm=spacing_mm, hu_window=tuple(hu_window), crop_size=crop_size,
            kernel_radius=map_kernel_radius, stride=map_stride, bin_count=map_bin_count,
        )
        # ``radiomics`` holds scalar_radiomics' arguments (conf/classify/radiomics); the volume's
        # resampling, window and cache are the fallback for the ones it leaves out.
        self.radiomics_settings = {
            "spacing_mm": spacing_mm, "hu_window": tuple(hu_window), "cache_dir": cache_dir, **dict(radiomics),
        }
        self.widths = tuple(int(w) for w in widths)
        self.projection_dim = projection_dim
        self.projector_hidden = projector_hidden
        self.dropout = dropout
        self.focal_gamma = focal_gamma
        self.contrastive_weight = contrastive_weight
        self.temperature = temperature
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.augment = augment
        self.cache_dir = cache_dir
        self.device = torch.device(device)
        self.random_state = random_state

    # ------------------------------------------------------------------ inputs

    def input_functions(self) -> list[Callable[[Mapping], object]]:
        """A case's scalar radiomics, and its crop with the fixed maps or the candidate maps' whole-tumour values."""
        scalar = functools.partial(ct_inputs.scalar_radiomics, **self.radiomics_settings)
        if self.map_select is None:
            return [self._volume_function(self.map_features), scalar]
        return [self._candidate_function(), scalar]

    def _volume_function(self, map_features: Mapping | None) -> Callable[[Mapping], dict]:
        return functools.partial(ct_inputs.tumour_volume, cache_dir=self.cache_dir, map_features=map_features,
                                 **self.volume_settings)

    def _candidate_function(self) -> Callable[[Mapping], dict]:
        settings = self.volume_settings
        return functools.partial(
            ct_inputs.tumour_values, column=settings["column"], spacing_mm=settings["spacing_mm"],
            hu_window=settings["hu_window"], crop_size=settings["crop_size"], features=self.map_candidates,
            bin_count=settings["bin_count"], cache_dir=self.cache_dir)

    def _volumes(self, cases: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Raw volumes (n, C, D, H, W) with the fitted maps and tumour masks (n, D, H, W)."""
        volume = self._volume_function(self.map_features_)
        inputs = [volume(row) for row in ct_inputs.rows(cases)]
        return np.stack([i["volume"] for i in inputs]), np.stack([i["mask"] for i in inputs])

    def _choose_maps(self, cases: pd.DataFrame, y: np.ndarray) -> tuple[Mapping | None, pd.DataFrame | None]:
        """The maps to use, ``{class: [feature, ...]}``, and the candidates' scores on these training cases."""
        if self.map_select is None:
            return self.map_features, None
        candidates = [self._candidate_function()(row) for row in ct_inputs.rows(cases)]
        names = [str(n) for n in candidates[0]["names"]]
        table = select_maps(values=np.stack([c["values"] for c in candidates]), names=names, y=y,
                            count=self.map_select)
        chosen = table.loc[table["chosen"], "feature"].tolist()
        features: dict[str, list[str]] = {}
        for name in names:  # candidate order, so that a choice gives one channel order (and one cache entry)
            if name in chosen:
                _, feature_class, feature = name.split("_", 2)
                features.setdefault(feature_class, []).append(feature)
        return features, table

    def scalar_radiomics(self, cases: pd.DataFrame) -> np.ndarray:
        """Whole-tumour pyradiomics features (n, D), unscaled."""
        return np.stack([
            ct_inputs.scalar_radiomics(row, **self.radiomics_settings)["values"]
            for row in ct_inputs.rows(cases)
        ])

    def _scale_volumes(self, volumes: np.ndarray, masks: np.ndarray) -> torch.Tensor:
        """Map channels standardised with the training tumour statistics, 0 outside the tumour."""
        maps = (volumes[:, 1:] - self.map_mean_[None, :, None, None, None]) / self.map_std_[None, :, None, None, None]
        maps = np.where(masks[:, None] == 1, maps, 0.0)
        return torch.from_numpy(np.concatenate([volumes[:, :1], maps], axis=1).astype(np.float32))

    def _scale_radiomics(self, values: np.ndarray) -> torch.Tensor:
        scaled = np.nan_to_num(self.radiomics_scaler_.transform(values), nan=0.0, posinf=0.0, neginf=0.0)
        return torch.from_numpy(np.clip(scaled, -RADIOMICS_CLIP, RADIOMICS_CLIP).astype(np.float32))

    # ------------------------------------------------------------------ fit / predict

    def fit(self, cases: pd.DataFrame, y: np.ndarray) -> "RGCNNPipeline":
        """Fit the channel and radiomics scaling and train the RGCNN on these cases (once per fold and settings)."""
        settings = {name: value for name, value in vars(self).items() if not name.endswith("_")}
        key = {"fit": "rgcnn", "settings": settings, **training_key(cases, [self.volume_settings["column"], "mask"], y)}
        (self.map_features_, self.voxel_maps_, self.map_mean_, self.map_std_, self.radiomics_scaler_, self.model_,
         self.history_) = fit_once(key, lambda: self._train(cases, y))
        return self

    def fitted_tables(self) -> dict[str, pd.DataFrame]:
        """``voxel_maps``: every candidate map's training ``auc`` and ``score``, ``chosen`` the maps used
        (none with fixed maps)."""
        return {} if self.voxel_maps_ is None else {"voxel_maps": self.voxel_maps_}

    def _train(self, cases: pd.DataFrame, y: np.ndarray) -> tuple:
        """``(maps, their selection table, map mean, map std, radiomics scaler, network in eval mode, loss
        history)`` fitted on these cases."""
        labels = torch.as_tensor(np.asarray(y, dtype=np.int64))
        self.map_features_, self.voxel_maps_ = self._choose_maps(cases, np.asarray(y, dtype=int))
        volumes, masks = self._volumes(cases)
        tumour = np.moveaxis(volumes[:, 1:], 1, -1)[masks == 1]  # (tumour voxels, maps)
        self.map_mean_ = tumour.mean(axis=0)
        self.map_std_ = np.where(tumour.std(axis=0) > 0, tumour.std(axis=0), 1.0)
        x = self._scale_volumes(volumes, masks)
        del volumes
        radiomics = self.scalar_radiomics(cases)
        self.radiomics_scaler_ = StandardScaler().fit(radiomics)
        r = self._scale_radiomics(radiomics)

        with seeded(self.random_state):
            generator = torch.Generator().manual_seed(self.random_state)
            model = RGCNN(
                in_channels=x.shape[1], radiomics_dim=r.shape[1], widths=self.widths,
                projection_dim=self.projection_dim, projector_hidden=self.projector_hidden, dropout=self.dropout,
            ).to(self.device)
            optimiser = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            focal, supcon = FocalLoss(self.focal_gamma), SupConLoss(self.temperature)

            def batch_loss(batch: np.ndarray) -> torch.Tensor:
                volume = random_flips(x[batch], (2, 3, 4), generator) if self.augment else x[batch]
                target = labels[batch].to(self.device)
                logits, z_image, z_radiomics = model.training_outputs(volume.to(self.device),
                                                                      r[batch].to(self.device))
                return focal(logits, target) + self.contrastive_weight * supcon(
                    torch.cat([z_image, z_radiomics]), torch.cat([target, target])
                )

            history = train_epochs(
                model, optimiser, self.epochs,
                lambda: balanced_batches(labels.numpy(), self.batch_size, generator), batch_loss,
            )
        return (self.map_features_, self.voxel_maps_, self.map_mean_, self.map_std_, self.radiomics_scaler_,
                model.eval(), history)

    def _inputs(self, cases: pd.DataFrame) -> torch.Tensor:
        volumes, masks = self._volumes(cases)
        return self._scale_volumes(volumes, masks)

    def predict_proba(self, cases: pd.DataFrame) -> np.ndarray:
        """P(y = 1) from the image encoder and classifier."""
        logits = predict_in_batches(lambda v: self.model_(v.to(self.device)).cpu(), [self._inputs(cases)],
                                    self.batch_size)
        return torch.softmax(logits, dim=1)[:, 1].numpy().astype(np.float64)

    def cnn_radiomics(self, cases: pd.DataFrame, layers: Sequence[int] = (0, 1, 2, 3)) -> np.ndarray:
        """CNN-based radiomics (n, sum of the chosen layers' widths): sums of the encoder's maps."""
        sums = predict_in_batches(
            lambda v: self.model_.encoder.map_sums(v.to(self.device), layers).cpu(), [self._inputs(cases)],
            self.batch_size,
        )
        return sums.numpy().astype(np.float64)


def select_maps(*, values: np.ndarray, names: Sequence[str], y: np.ndarray, count: int) -> pd.DataFrame:
    """Candidates ranked by ``score = |AUC - 0.5|`` of their values ``(n, D)`` against ``y``; the top ``count``
    are ``chosen`` (ties in candidate order). One row per candidate: ``feature``, ``auc``, ``score``,
    ``rank`` (0 = best), ``chosen``."""
    if count > len(names):
        raise ValueError(f"map_select={count} maps asked for, but there are only {len(names)} map_candidates")
    auc = np.array([roc_auc_score(y, column) if np.ptp(column) > 0 else 0.5 for column in values.T])
    score = np.abs(auc - 0.5)
    rank = np.empty(len(names), int)
    rank[np.argsort(-score, kind="stable")] = np.arange(len(names))
    return pd.DataFrame({"feature": list(names), "auc": auc, "score": score, "rank": rank, "chosen": rank < count})


@PIPELINES.register("rgcnn")
def rgcnn(**kwargs) -> RGCNNPipeline:
    """The RGCNN pipeline with its config kwargs (see :class:`RGCNNPipeline`)."""
    return RGCNNPipeline(**kwargs)
