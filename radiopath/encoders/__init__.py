"""Patch encoders behind one registry.

``build_encoder(name, checkpoint=..., **kwargs)`` builds any registered encoder;
``list_encoders()`` names them. Pathology encoders are :class:`TileEncoder`
(tile images -> vectors), CT encoders are :class:`VolumeEncoder` (a preprocessed
CT -> patch vectors with positions in mm).
"""

from radiopath.encoders.base import TileEncoder, VolumeEncoder
from radiopath.encoders.features import PatchFeatures
from radiopath.encoders.registry import build_encoder, list_encoders, register_encoder

# Importing the modules registers their encoders.
from radiopath.encoders import pathology as _pathology  # noqa: F401,E402
from radiopath.encoders import ct_vit as _ct_vit  # noqa: F401,E402
from radiopath.encoders import radiomics as _radiomics  # noqa: F401,E402

__all__ = [
    "PatchFeatures",
    "TileEncoder",
    "VolumeEncoder",
    "build_encoder",
    "list_encoders",
    "register_encoder",
]
