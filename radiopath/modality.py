"""The two imaging modalities and every fact the stages need about them, in one table.

A stage asks ``modality(name)`` instead of branching on ``name == "pathology"``. What
is configuration (the encoder a modality uses, tiling, clustering) stays in ``conf/``:
``encoder_group`` names where, and the default is that group's entry in
``conf/encode.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Modality:
    """What a stage needs to know about one modality.

    ``image_columns`` are the manifest columns a case needs for this modality;
    ``coord_units`` are the units of the patch-feature file's ``coords`` and
    ``pos_units`` those of a graph's node positions; ``dims`` is 2 (slides) or
    3 (CT volumes); ``view`` says what kind of image it is, so how importance is
    drawn and planted truth is read (``"slide"``: a 2-D slide, drawn over its
    thumbnail; ``"volume"``: a CT volume, drawn on axial slices); ``needs_mpp`` is
    true when the patch features must carry the slide's µm per level-0 pixel;
    ``bag_column`` is the manifest column that may point at patch features made
    elsewhere (an HDF5 bag in the CLAM/Trident layout, :mod:`radiopath.encoders.bags`)
    instead of the image, None where that layout does not apply (CT).
    """

    name: str
    image_columns: tuple[str, ...]
    coord_units: str
    pos_units: str
    dims: int
    view: str
    needs_mpp: bool
    bag_column: str | None

    @property
    def image_column(self) -> str:
        """The manifest column of the image itself (the CT, the slide); the others go with it (the mask)."""
        return self.image_columns[0]

    @property
    def required_columns(self) -> tuple[str | tuple[str, ...], ...]:
        """The manifest columns a case of this modality needs; a tuple entry means "one of these".

        A modality with a bag column needs its image or a bag (``("wsi", "pathology_features")``).
        """
        if self.bag_column is None:
            return self.image_columns
        return ((*self.image_columns, self.bag_column),)

    @property
    def encoder_group(self) -> str:
        """The hydra config group of this modality's encoder (``encoder/pathology``)."""
        return f"encoder/{self.name}"

    def physical_positions(self, coords: np.ndarray, patch_size: np.ndarray, level0_mpp: float | None) -> np.ndarray:
        """Patch centres in ``pos_units`` (float64) from a feature file's ``coords``.

        Slide coordinates are level-0 pixels of the tile's top-left corner; CT
        coordinates are already patch centres in mm.
        """
        coords = np.asarray(coords, dtype=np.float64)
        if self.needs_mpp:
            return (coords + np.asarray(patch_size, dtype=np.float64) / 2) * float(level0_mpp)
        return coords


RADIOLOGY = Modality("radiology", image_columns=("ct", "mask"), coord_units="mm", pos_units="mm", dims=3,
                     view="volume", needs_mpp=False, bag_column=None)
PATHOLOGY = Modality("pathology", image_columns=("wsi",), coord_units="level0_px", pos_units="µm", dims=2,
                     view="slide", needs_mpp=True, bag_column="pathology_features")
MODALITIES: dict[str, Modality] = {m.name: m for m in (RADIOLOGY, PATHOLOGY)}
NAMES: tuple[str, ...] = tuple(MODALITIES)


def modality(name: str) -> Modality:
    """The :class:`Modality` called ``name``; an unknown name is an error that lists the known ones."""
    try:
        return MODALITIES[name]
    except KeyError:
        raise ValueError(f"unknown modality {name!r}; choose from {', '.join(NAMES)}") from None
