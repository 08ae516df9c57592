"""Patch encoders behind one registry.

``build_encoder(name, checkpoint=..., **kwargs)`` builds any registered encoder;
``list_encoders()`` names them. Pathology encoders are ``TileEncoder`` (tile images
-> vectors), CT encoders are ``VolumeEncoder`` (a preprocessed CT -> patch vectors
with positions in mm). The built-in encoder modules (timm, MONAI, pyradiomics) are
imported on first use, so reading a feature file stays light.
"""

from radiopath.encoders.registry import build_encoder, list_encoders, register_encoder

__all__ = ["build_encoder", "list_encoders", "register_encoder"]
