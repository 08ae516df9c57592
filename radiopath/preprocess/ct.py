"""CT preprocessing with SimpleITK.

(Helper B fills in the functions; :class:`PreparedCT` is the contract with the encoders.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass
class PreparedCT:
    """A preprocessed CT case: what every CT encoder receives.

    ``image`` is float32, isotropic, intensity-normalised and cropped around the
    tumour; ``mask`` is uint8 (1 = tumour, largest connected component) on exactly
    the same grid. Both keep their physical geometry (origin, spacing, direction).
    """

    case_id: str
    image: sitk.Image
    mask: sitk.Image

    def image_array(self) -> np.ndarray:
        """Image voxels as a float32 array in (z, y, x) order."""
        return sitk.GetArrayFromImage(self.image).astype(np.float32)

    def mask_array(self) -> np.ndarray:
        """Mask voxels as a uint8 array in (z, y, x) order."""
        return sitk.GetArrayFromImage(self.mask).astype(np.uint8)

    def index_to_mm(self, zyx: np.ndarray) -> np.ndarray:
        """Continuous voxel indices ``(N, 3)`` in (z, y, x) -> physical points ``(N, 3)`` in mm (x, y, z)."""
        zyx = np.asarray(zyx, dtype=np.float64).reshape(-1, 3)
        ijk = zyx[:, ::-1]  # SimpleITK indexes (x, y, z)
        direction = np.array(self.image.GetDirection()).reshape(3, 3)
        spacing = np.array(self.image.GetSpacing())
        origin = np.array(self.image.GetOrigin())
        return (origin + (ijk * spacing) @ direction.T).astype(np.float32)
