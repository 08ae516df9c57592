"""Write RGB images as tiled pyramidal TIFFs that OpenSlide opens.

OpenSlide reads such a file as a "generic-tiff" slide: each pyramid level is a
tiled page, and the microns-per-pixel come from the TIFF resolution tags (pixels
per centimetre), which OpenSlide reports as ``openslide.mpp-x`` / ``mpp-y``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from radiopath.io import atomic_write


def write_pyramidal_tiff(
    path: str | Path,
    image: np.ndarray,
    mpp: float,
    downsamples: tuple[int, ...] = (1, 4, 16),
    tile: int = 256,
) -> None:
    """Write uint8 RGB ``image`` (H, W, 3) at ``mpp`` µm/px with one level per downsample."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    if downsamples[0] != 1 or any(b % a for a, b in zip(downsamples, downsamples[1:])):
        raise ValueError(f"downsamples must start at 1 and each divide the next, got {downsamples}")
    level, previous = image, 1
    with atomic_write(path, "wb") as handle, tifffile.TiffWriter(handle, bigtiff=image.nbytes > 2**31) as writer:
        for i, factor in enumerate(downsamples):
            level = _downsample(level, factor // previous)  # from the previous level: cheaper
            previous = factor
            pixels_per_cm = 1e4 / (mpp * factor)
            writer.write(
                level,
                photometric="rgb",
                tile=(tile, tile),
                compression="zlib",
                resolution=(pixels_per_cm, pixels_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,  # 1 = reduced-resolution page
            )


def _downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Block-average by ``factor`` (cropping to a multiple of it)."""
    if factor == 1:
        return image
    h, w = image.shape[0] // factor, image.shape[1] // factor
    blocks = image[: h * factor, : w * factor].reshape(h, factor, w, factor, 3)
    return (blocks.mean(axis=(1, 3), dtype=np.float32) + 0.5).astype(np.uint8)
