"""Patch encoders behind one registry.

``ENCODERS.create(name, checkpoint=..., **kwargs)`` builds any registered encoder
(``timm:<model>`` any timm model); ``ENCODERS.names()`` names them and an unknown name
is a :class:`~radiopath.registry.UnknownNameError`. Pathology encoders are ``TileEncoder``
(tile images -> vectors), CT encoders are ``VolumeEncoder`` (a preprocessed CT -> patch
vectors with positions in mm). The built-in encoder modules (timm, MONAI, pyradiomics) are
imported on first use, so reading a feature file stays light.
"""

from radiopath.encoders.registry import ENCODERS

__all__ = ["ENCODERS"]
