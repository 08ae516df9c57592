r"""``pathomics``: hand-crafted tile features (stain, nuclei, texture) with no weights.

Tiles arrive as uint8 RGB at the tiling's resolution, ``mpp`` µm per pixel (the
config takes it from ``wsi.tiling.mpp``), and a whole batch is processed at once:

1. **Colour deconvolution.** Beer-Lambert optical density per channel,
   :math:`OD = -\ln((I + 1) / 256)`, unmixed by least squares onto the haematoxylin
   and eosin stain vectors (unit RGB OD vectors, by default the reference H&E matrix
   of Macenko et al. 2009): H and E are stain amounts, "OD" below, clipped at 0.
2. **Tissue**: pixels whose RGB optical densities sum to at least ``tissue_od``.
   Intensity statistics are over tissue pixels; nuclear density and fraction are
   per tissue area.
3. **Nuclei**: tissue pixels with H above ``nucleus_h_od``, split into 8-connected
   components; components smaller than ``min_nucleus_area_um2`` are dropped.
   Touching nuclei count as one: density is a lower bound where nuclei crowd.
4. **Texture** of H: the mean squared gradient (forward differences), and a
   symmetric grey-level co-occurrence matrix of H quantised to ``glcm_levels``
   levels over ``[0, glcm_max_od]``, for pixel pairs ``glcm_distance_um`` apart
   horizontally and vertically, both on tissue.

Features, in this order (:data:`FEATURE_NAMES`); every one is 0 for a tile with
no tissue (the nuclear and GLCM ones also where no nucleus / no tissue pair exists):

==  ========================  ================================================  ==============
 #  name                      meaning                                           unit
==  ========================  ================================================  ==============
 0  tissue_fraction           tissue pixels / tile pixels                       fraction
 1  h_mean                    mean H over tissue                                OD
 2  h_sd                      standard deviation of H over tissue               OD
 3  h_p10                     10th percentile of H over tissue                  OD
 4  h_p50                     median H over tissue                              OD
 5  h_p90                     90th percentile of H over tissue                  OD
 6  e_mean                    mean E over tissue                                OD
 7  e_sd                      standard deviation of E over tissue               OD
 8  e_p10                     10th percentile of E over tissue                  OD
 9  e_p50                     median E over tissue                              OD
10  e_p90                     90th percentile of E over tissue                  OD
11  nuclear_fraction          nuclear area / tissue area                        fraction
12  nuclear_density           nuclei per 1000 µm² of tissue                     1 / 1000 µm²
13  nucleus_diameter_mean     mean equivalent diameter 2 sqrt(area / pi)        µm
14  nucleus_diameter_sd       its standard deviation over the tile's nuclei     µm
15  nucleus_h_mean            mean H inside nuclei (hyperchromasia)             OD
16  extranuclear_h_mean       mean H over tissue outside nuclei                 OD
17  h_gradient_energy         mean squared H gradient over tissue               OD² / µm²
18  glcm_contrast             sum P(i, j) (i - j)²                              grey levels²
19  glcm_homogeneity          sum P(i, j) / (1 + (i - j)²)                      1
20  glcm_energy               sqrt(sum P(i, j)²)                                1
21  glcm_correlation          sum P(i, j) (i - mu)(j - mu) / sigma²             1
==  ========================  ================================================  ==============

Units are chosen so that features range over 0.1 to a few tens on H&E at 20x (no
feature in the thousands, as nuclei per mm² or areas in pixels would be), which keeps
the graph clustering's single feature-distance scale (``lambda_f``) meaningful. The encoder
runs on the CPU in numpy/scipy (``device`` is ignored) and is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from radiopath.encoders.base import TileEncoder
from radiopath.encoders.registry import ENCODERS

FEATURE_NAMES = (
    "tissue_fraction",
    "h_mean", "h_sd", "h_p10", "h_p50", "h_p90",
    "e_mean", "e_sd", "e_p10", "e_p50", "e_p90",
    "nuclear_fraction", "nuclear_density", "nucleus_diameter_mean", "nucleus_diameter_sd",
    "nucleus_h_mean", "extranuclear_h_mean",
    "h_gradient_energy",
    "glcm_contrast", "glcm_homogeneity", "glcm_energy", "glcm_correlation",
)
QUANTILES = (0.1, 0.5, 0.9)
DENSITY_AREA_UM2 = 1000.0  # nuclear density is per this much tissue
# Macenko et al. (2009) reference stain vectors (RGB optical density).
MACENKO_HAEMATOXYLIN = (0.5626, 0.7201, 0.4062)
MACENKO_EOSIN = (0.2159, 0.8012, 0.5581)
# -ln((I + 1) / 256) for every uint8 value: optical density by table look-up.
_OD_TABLE = -np.log((np.arange(256, dtype=np.float32) + 1) / 256)
# 8-connected within a tile, never across tiles of the batch.
_IN_TILE_8 = np.zeros((3, 3, 3), bool)
_IN_TILE_8[1] = True


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0."""
    return np.divide(numerator, denominator, out=np.zeros(np.shape(numerator), np.float64), where=denominator > 0)


class PathomicsEncoder(TileEncoder):
    """Stain, nuclear and texture statistics of H&E tiles (see the module docstring).

    :meth:`encode_tiles` (what the encode stage calls) works on the uint8 tiles
    themselves, at the size they arrive: there is no network, input size or
    normalisation, so ``input_size``, ``mean`` and ``std`` are None.
    """

    def __init__(
        self,
        *,
        mpp: float,
        haematoxylin_rgb: Sequence[float],
        eosin_rgb: Sequence[float],
        tissue_od: float,
        nucleus_h_od: float,
        min_nucleus_area_um2: float,
        glcm_levels: int,
        glcm_max_od: float,
        glcm_distance_um: float,
    ):
        super().__init__()
        self.name = "pathomics"
        self.feature_names = FEATURE_NAMES
        self.embed_dim = len(FEATURE_NAMES)
        self.input_size = None
        self.mean = self.std = None
        self.mpp = float(mpp)
        stains = np.array([haematoxylin_rgb, eosin_rgb], dtype=np.float64)
        stains /= np.linalg.norm(stains, axis=1, keepdims=True)
        self.unmixing = np.linalg.pinv(stains).astype(np.float32)  # (3, 2): OD -> (H, E)
        self.tissue_od = float(tissue_od)
        self.nucleus_h_od = float(nucleus_h_od)
        self.min_nucleus_px = float(min_nucleus_area_um2) / self.mpp**2
        self.glcm_levels = int(glcm_levels)
        self.glcm_max_od = float(glcm_max_od)
        self.glcm_step = max(1, round(float(glcm_distance_um) / self.mpp))

    def encode_tiles(self, tiles: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
        """Features ``(N, 22)`` float32 in :data:`FEATURE_NAMES` order for uint8 tiles ``(N, H, W, 3)``.

        Any tile size works (the units are physical); ``device`` is ignored: numpy on the CPU.
        """
        tiles = np.asarray(tiles)
        if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[-1] != 3:
            raise ValueError(f"expected uint8 RGB tiles (N, H, W, 3), got {tiles.dtype} {tiles.shape}")
        od = _OD_TABLE[tiles]
        tissue = od.sum(axis=-1) >= self.tissue_od
        stains = np.maximum(od @ self.unmixing, 0)
        h, e = stains[..., 0], stains[..., 1]
        del od, stains
        n_tissue = tissue.sum(axis=(1, 2)).astype(np.float64)
        columns = [n_tissue / tissue[0].size]
        columns += self._intensity(h, tissue, n_tissue)
        columns += self._intensity(e, tissue, n_tissue)
        columns += self._nuclei(h, tissue, n_tissue)
        columns.append(self._gradient_energy(h, tissue))
        columns += self._glcm(h, tissue)
        return np.stack(columns, axis=1).astype(np.float32)

    @staticmethod
    def _intensity(values: np.ndarray, tissue: np.ndarray, n_tissue: np.ndarray) -> list[np.ndarray]:
        """Mean, sd and :data:`QUANTILES` of ``values`` over each tile's tissue pixels."""
        flat = values.reshape(len(values), -1)
        inside = tissue.reshape(len(values), -1)
        total = np.where(inside, flat, 0).sum(axis=1, dtype=np.float64)
        squares = np.where(inside, flat * flat, 0).sum(axis=1, dtype=np.float64)
        mean = _ratio(total, n_tissue)
        sd = np.sqrt(np.maximum(_ratio(squares, n_tissue) - mean**2, 0))
        # Non-tissue sorts last; each tile's quantile interpolates within its own tissue pixels.
        ordered = np.sort(np.where(inside, flat, np.inf), axis=1)
        last = np.maximum(n_tissue - 1, 0)
        quantiles = []
        for q in QUANTILES:
            position = q * last
            low = np.floor(position).astype(np.int64)
            high = np.minimum(low + 1, last.astype(np.int64))
            pick = np.take_along_axis(ordered, np.stack([low, high], axis=1), axis=1).astype(np.float64)
            pick[n_tissue == 0] = 0  # no tissue: the picks are the +inf filler
            quantiles.append(pick[:, 0] + (position - low) * (pick[:, 1] - pick[:, 0]))
        return [mean, sd, *quantiles]

    def _nuclei(self, h: np.ndarray, tissue: np.ndarray, n_tissue: np.ndarray) -> list[np.ndarray]:
        """Nuclear fraction, density, diameter mean/sd, and H inside and outside nuclei, per tile."""
        n = len(h)
        labels, count = ndimage.label(tissue & (h > self.nucleus_h_od), structure=_IN_TILE_8)
        foreground = labels > 0
        tile_of_pixel = np.nonzero(foreground)[0]
        component = labels[foreground] - 1
        h_inside = h[foreground]
        area_px = np.bincount(component, minlength=count)
        tile_of_component = np.zeros(count, np.int64)
        tile_of_component[component] = tile_of_pixel
        kept = area_px >= self.min_nucleus_px
        kept_pixel = kept[component]

        nuclear_px = np.bincount(tile_of_pixel[kept_pixel], minlength=n).astype(np.float64)
        nuclear_h = np.bincount(tile_of_pixel[kept_pixel], weights=h_inside[kept_pixel], minlength=n)
        tissue_h = np.where(tissue, h, 0).sum(axis=(1, 2), dtype=np.float64)
        diameter = 2 * np.sqrt(area_px[kept] * self.mpp**2 / np.pi)
        owner = tile_of_component[kept]
        n_nuclei = np.bincount(owner, minlength=n).astype(np.float64)
        diameter_mean = _ratio(np.bincount(owner, weights=diameter, minlength=n), n_nuclei)
        diameter_sq = _ratio(np.bincount(owner, weights=diameter**2, minlength=n), n_nuclei)
        tissue_um2 = n_tissue * self.mpp**2
        return [
            _ratio(nuclear_px, n_tissue),
            _ratio(n_nuclei * DENSITY_AREA_UM2, tissue_um2),
            diameter_mean,
            np.sqrt(np.maximum(diameter_sq - diameter_mean**2, 0)),
            _ratio(nuclear_h, nuclear_px),
            _ratio(tissue_h - nuclear_h, n_tissue - nuclear_px),
        ]

    def _gradient_energy(self, h: np.ndarray, tissue: np.ndarray) -> np.ndarray:
        """Mean over tissue of the squared forward-difference gradient of H, per µm²."""
        dy = np.diff(h, axis=1)[:, :, :-1]
        dx = np.diff(h, axis=2)[:, :-1, :]
        inside = tissue[:, :-1, :-1]
        energy = np.where(inside, dx * dx + dy * dy, 0).sum(axis=(1, 2), dtype=np.float64)
        return _ratio(energy, inside.sum(axis=(1, 2)).astype(np.float64)) / self.mpp**2

    def _glcm(self, h: np.ndarray, tissue: np.ndarray) -> list[np.ndarray]:
        """Contrast, homogeneity, energy and correlation of each tile's symmetric H co-occurrence matrix."""
        n, levels, step = len(h), self.glcm_levels, self.glcm_step
        grey = np.minimum(h * (levels / self.glcm_max_od), levels - 1).astype(np.int64)
        tile_cells = (np.arange(n, dtype=np.int64) * levels * levels)[:, None, None]  # each tile's block of cells
        counts = np.zeros(n * levels * levels, np.float64)
        pairs = (
            (grey[:, :, :-step], grey[:, :, step:], tissue[:, :, :-step] & tissue[:, :, step:]),
            (grey[:, :-step, :], grey[:, step:, :], tissue[:, :-step, :] & tissue[:, step:, :]),
        )
        for first, second, both in pairs:
            cells = tile_cells + first * levels + second
            counts += np.bincount(cells[both], minlength=len(counts))
        cooccurrence = counts.reshape(n, levels, levels)
        cooccurrence += cooccurrence.transpose(0, 2, 1)
        total = cooccurrence.sum(axis=(1, 2))
        p = cooccurrence / np.where(total > 0, total, 1)[:, None, None]
        i, j = np.indices((levels, levels), dtype=np.float64)
        mu = (p * i).sum(axis=(1, 2))
        variance = (p * (i - mu[:, None, None]) ** 2).sum(axis=(1, 2))
        covariance = (p * (i - mu[:, None, None]) * (j - mu[:, None, None])).sum(axis=(1, 2))
        # A uniform tile is perfectly correlated (as scikit-image has it); no pairs gives 0.
        correlation = np.where(variance > 0, _ratio(covariance, variance), np.where(total > 0, 1.0, 0.0))
        return [
            (p * (i - j) ** 2).sum(axis=(1, 2)),
            (p / (1 + (i - j) ** 2)).sum(axis=(1, 2)),
            np.sqrt((p**2).sum(axis=(1, 2))),
            correlation,
        ]


@ENCODERS.register("pathomics")
def pathomics(
    checkpoint: str | None = None,
    *,
    mpp: float = 0.5,
    haematoxylin_rgb: Sequence[float] = MACENKO_HAEMATOXYLIN,
    eosin_rgb: Sequence[float] = MACENKO_EOSIN,
    tissue_od: float = 0.25,
    nucleus_h_od: float = 0.4,
    min_nucleus_area_um2: float = 5.0,
    glcm_levels: int = 8,
    glcm_max_od: float = 1.6,
    glcm_distance_um: float = 1.0,
) -> PathomicsEncoder:
    """Hand-crafted H&E tile features (:data:`FEATURE_NAMES`); it has no weights.

    ``mpp``: µm per pixel of the tiles it is given (``wsi.tiling.mpp``);
    ``haematoxylin_rgb``, ``eosin_rgb``: stain OD vectors (normalised here);
    ``tissue_od``: least summed RGB OD of a tissue pixel; ``nucleus_h_od``: least H
    of a nuclear pixel; ``min_nucleus_area_um2``: smaller components are noise;
    ``glcm_levels`` grey levels over ``[0, glcm_max_od]`` H, pairs ``glcm_distance_um`` apart.
    """
    if checkpoint is not None:
        raise ValueError(f"the pathomics encoder has no weights; got checkpoint={checkpoint!r}, expected null")
    problems = _parameter_problems(
        positive={"mpp": mpp, "nucleus_h_od": nucleus_h_od, "glcm_max_od": glcm_max_od,
                  "glcm_distance_um": glcm_distance_um},
        non_negative={"tissue_od": tissue_od, "min_nucleus_area_um2": min_nucleus_area_um2},
        stains={"haematoxylin_rgb": haematoxylin_rgb, "eosin_rgb": eosin_rgb},
    )
    if glcm_levels < 2:
        problems.append(f"glcm_levels={glcm_levels!r} (must be >= 2)")
    if problems:
        raise ValueError(f"pathomics encoder: {'; '.join(problems)}")
    return PathomicsEncoder(
        mpp=mpp, haematoxylin_rgb=[float(v) for v in haematoxylin_rgb], eosin_rgb=[float(v) for v in eosin_rgb],
        tissue_od=tissue_od, nucleus_h_od=nucleus_h_od, min_nucleus_area_um2=min_nucleus_area_um2,
        glcm_levels=glcm_levels, glcm_max_od=glcm_max_od, glcm_distance_um=glcm_distance_um,
    )


def _parameter_problems(*, positive: dict, non_negative: dict, stains: dict) -> list[str]:
    """What is wrong with the builder's arguments, one phrase per problem."""
    problems = [f"{name}={value!r} (must be > 0)" for name, value in positive.items() if not value > 0]
    problems += [f"{name}={value!r} (must be >= 0)" for name, value in non_negative.items() if not value >= 0]
    for name, vector in stains.items():
        values = np.asarray(vector, dtype=float)
        if values.shape != (3,) or (values < 0).any() or not (values > 0).any():
            problems.append(f"{name}={list(vector)!r} (must be 3 non-negative RGB optical densities, not all 0)")
    return problems
