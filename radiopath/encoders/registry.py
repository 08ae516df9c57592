"""A name -> builder registry, in the spirit of timm's ``create_model``."""

from __future__ import annotations

import importlib
from typing import Callable

_BUILDERS: dict[str, Callable] = {}
_BUILTIN_MODULES = ("pathology", "pathomics", "ct_vit", "radiomics")


def _load_builtin() -> None:
    """Import the built-in encoder modules; importing registers their encoders."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"radiopath.encoders.{module}")


def register_encoder(name: str) -> Callable[[Callable], Callable]:
    """Decorator: register ``builder(**kwargs) -> encoder`` under ``name``."""

    def decorate(builder: Callable) -> Callable:
        if name in _BUILDERS:
            raise ValueError(f"encoder {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return decorate


def build_encoder(name: str, **kwargs):
    """Build the encoder called ``name``.

    ``timm:<model>`` builds any timm model as a pathology tile encoder.
    Keyword arguments go to the builder (``checkpoint=`` a local weight file).
    """
    _load_builtin()
    if name.startswith("timm:"):
        return _BUILDERS["timm"](model_name=name.removeprefix("timm:"), **kwargs)
    if name not in _BUILDERS:
        raise KeyError(f"unknown encoder {name!r}; known: {', '.join(list_encoders())}")
    return _BUILDERS[name](**kwargs)


def list_encoders() -> list[str]:
    """Names of all registered encoders (``timm`` stands for ``timm:<any model>``)."""
    _load_builtin()
    return sorted(_BUILDERS)
