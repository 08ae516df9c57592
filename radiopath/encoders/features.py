"""The patch-feature file: what the encode stage writes and build_graphs reads.

One file per case, modality and encoder, at
``{features_dir}/{modality}/{encoder}/{case_id}.pt``
(:func:`radiopath.layout.features_path`): a ``torch.save`` of a plain dict of
tensors and strings, so it loads with ``torch.load(weights_only=True)``. What
depends on the modality (coordinate units and dimensions, whether ``level0_mpp``
is needed) comes from :mod:`radiopath.modality`:

============== ===============================================================
``features``   float32 ``(N, D)``: one row per patch
``coords``     float32 ``(N, 2)`` level-0 pixels (x, y of the tile's top-left
               corner) for WSI, ``(N, 3)`` mm (x, y, z, patch centre, physical
               space of the CT) for CT
``patch_size`` float32 ``(2,)`` or ``(3,)``: patch extent in the same units
``coord_units````"level0_px"`` or ``"mm"``
``level0_mpp`` µm per level-0 pixel of the slide (pathology only), so that
               later stages can work in µm whatever the scanner
``case_id``,   strings identifying the file's content
``modality``,
``encoder``
============== ===============================================================

Slide features can also be stored as an HDF5 bag in the CLAM/Trident layout
(``{case_id}.h5`` beside, ``encode.format=h5``): :mod:`radiopath.encoders.bags`
reads and writes those, and :func:`radiopath.encoders.bags.load_features` reads
either kind of file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from radiopath.io import atomic_torch_save
from radiopath.modality import modality


@dataclass
class PatchFeatures:
    """Patch features and coordinates of one case and modality."""

    case_id: str
    modality: str
    encoder: str
    features: np.ndarray
    coords: np.ndarray
    patch_size: np.ndarray
    level0_mpp: float | None = None

    def __post_init__(self):
        spec = modality(self.modality)
        self.features = np.asarray(self.features, dtype=np.float32)
        self.coords = np.asarray(self.coords, dtype=np.float32)
        self.patch_size = np.asarray(self.patch_size, dtype=np.float32).reshape(-1)
        n, dims = len(self.features), spec.dims
        if self.features.ndim != 2 or self.coords.shape != (n, dims):
            raise ValueError(
                f"case {self.case_id!r}: features {self.features.shape} and coords {self.coords.shape} "
                f"do not describe {n} patches with {dims}-D positions"
            )
        if spec.needs_mpp and not (self.level0_mpp and self.level0_mpp > 0):
            raise ValueError(f"case {self.case_id!r}: {self.modality} features need the slide's level0_mpp")
        if not all_finite(self.features):
            raise ValueError(f"case {self.case_id!r}: {self.modality} features contain NaN or inf")

    @property
    def coord_units(self) -> str:
        """Units of ``coords`` and ``patch_size`` (``"level0_px"``, ``"mm"``)."""
        return modality(self.modality).coord_units

    def save(self, path: str | Path) -> None:
        """Write atomically to ``path``."""
        extra = {} if self.level0_mpp is None else {"level0_mpp": float(self.level0_mpp)}
        atomic_torch_save(
            {
                **extra,
                "features": torch.from_numpy(self.features),
                "coords": torch.from_numpy(self.coords),
                "patch_size": torch.from_numpy(self.patch_size),
                "coord_units": self.coord_units,
                "case_id": self.case_id,
                "modality": self.modality,
                "encoder": self.encoder,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> "PatchFeatures":
        """Read a file written by :meth:`save` (safe: ``weights_only=True``)."""
        data = torch.load(path, map_location="cpu", weights_only=True)
        return cls(
            case_id=data["case_id"],
            modality=data["modality"],
            encoder=data["encoder"],
            features=data["features"].numpy(),
            coords=data["coords"].numpy(),
            patch_size=data["patch_size"].numpy(),
            level0_mpp=data.get("level0_mpp"),
        )


def all_finite(values: np.ndarray, rows: int = 8192) -> bool:
    """``np.isfinite(values).all()`` a block of rows at a time (no full-size bool temporary)."""
    return all(np.isfinite(values[start:start + rows]).all() for start in range(0, len(values), rows))


def starts_outside(coords: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Which patches' level-0 top-left corners ``coords`` (N, 2) lie off a ``size`` = (width, height) slide.

    A patch may reach past the right or bottom edge (CLAM pads edge patches); it may not start there.
    """
    x, y = coords[:, 0], coords[:, 1]
    return (x < 0) | (y < 0) | (x >= size[0]) | (y >= size[1])
