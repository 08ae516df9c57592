"""Write RGB images as tiled pyramidal TIFFs that OpenSlide opens.

OpenSlide reads such a file as a "generic-tiff" slide: each pyramid level is a
tiled page, and the microns-per-pixel come from the TIFF resolution tags (pixels
per centimetre), which OpenSlide reports as ``openslide.mpp-x`` / ``mpp-y``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from radiopath.io import atomic_write


def write_pyramidal_tiff(
    path: str | Path,
    image: np.ndarray,
    mpp: float,
    downsamples: tuple[int, ...] = (1, 4, 16),
    tile: int = 256,
    *,
    zlib_level: int = 6,
) -> None:
    """Write uint8 RGB ``image`` (H, W, 3) at ``mpp`` µm/px with one level per downsample.

    Tiles are deflate-compressed at ``zlib_level`` (1 fastest, 9 smallest; lossless at any level).
    """
    if not 1 <= zlib_level <= 9:
        raise ValueError(f"zlib_level must be 1 to 9, got {zlib_level}")
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
                compressionargs={"level": zlib_level},
                resolution=(pixels_per_cm, pixels_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,  # 1 = reduced-resolution page
            )


def _downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Block-average by ``factor``, rounded (cropping to a multiple of it).

    PIL's ``reduce`` is a box filter in C: an order of magnitude faster than a numpy
    mean over the block axes, with the same result.
    """
    if factor == 1:
        return image
    h, w = image.shape[0] // factor, image.shape[1] // factor
    cropped = np.ascontiguousarray(image[: h * factor, : w * factor])
    return np.asarray(Image.fromarray(cropped).reduce(factor))
