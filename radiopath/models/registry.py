"""The aggregator registry and the start-of-run check of ``model.name`` / ``model.kwargs``.

Every setting of an aggregator is a keyword-only argument without a default: its
values live in ``conf/model/*.yaml`` only. :func:`check_model_config` holds a
configuration against that signature and the constructor's own checks, so a bad
value fails before any data is loaded, with the key named.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

from radiopath.errors import ConfigError
from radiopath.registry import Registry, UnknownNameError

AGGREGATORS = Registry(
    "aggregator", builtin_modules=("radiopath.models.mean", "radiopath.models.abmil", "radiopath.models.sparra"))

# Node-feature width of the throwaway model check_model_config builds: its checks need no real data.
_PROBE_WIDTH = 2


def check_model_config(name: str, kwargs: Mapping, *, modalities: Sequence[str]) -> None:
    """Fail with :class:`ConfigError` naming ``model.name`` or ``model.kwargs.<key>`` if these cannot build.

    Builds one throwaway model of ``modalities`` (the run's: a per-modality ``ratio`` must
    name each) on two node features, in milliseconds, so every check a constructor makes
    runs here too.
    """
    try:
        builder = AGGREGATORS.get(name)
    except UnknownNameError as error:
        raise ConfigError("model.name", str(error)) from None
    settings = [p for p in inspect.signature(builder).parameters.values() if p.kind is p.KEYWORD_ONLY]
    known = [p.name for p in settings]
    for key in kwargs:
        if key not in known:
            raise ConfigError(f"model.kwargs.{key}",
                              f"not a setting of {name}; its settings: {', '.join(known) or 'none'}")
    for setting in settings:
        if setting.default is setting.empty and setting.name not in kwargs:
            raise ConfigError(f"model.kwargs.{setting.name}", f"missing: {name} needs it (conf/model/*.yaml)")
    try:
        builder({m: _PROBE_WIDTH for m in modalities}, **kwargs)
    except ConfigError as error:
        raise error.under("model.kwargs") from None
