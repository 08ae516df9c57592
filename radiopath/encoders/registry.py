"""The encoder registry: ``ENCODERS.create(name, checkpoint=..., **kwargs)``.

``timm:<model>`` builds any timm model as a pathology tile encoder (a registry family).
The built-in encoder modules (timm, MONAI, pyradiomics) are imported on first use.
"""

from __future__ import annotations

from radiopath.registry import Registry

ENCODERS = Registry("encoder", builtin_modules=tuple(
    f"radiopath.encoders.{module}" for module in ("pathology", "pathomics", "ct_vit", "radiomics")))
