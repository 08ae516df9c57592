"""Errors that name the case and the problem, and the checks that raise :class:`ConfigError`."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Collection


class CaseError(Exception):
    """A problem with one case's input: the stage reports it and goes on with the others."""

    def __init__(self, case_id: str, reason: str):
        super().__init__(f"case {case_id!r}: {reason}")
        self.case_id = case_id
        self.reason = reason


class ManifestError(ValueError):
    """The cohort manifest as a whole cannot be used (missing file or required column)."""


class ConfigError(ValueError):
    """A configuration value that cannot work; names its key (``model.kwargs.ratio``).

    Raised before any case is processed, so a typo costs seconds, not a run.
    """

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem

    def under(self, prefix: str) -> "ConfigError":
        """The same error with its key inside ``prefix`` (``ratio`` -> ``model.kwargs.ratio``)."""
        return ConfigError(f"{prefix}.{self.key}", self.problem)


_INTERVAL = re.compile(r"([\[(])\s*([^,\s]+)\s*,\s*([^\]\)\s]+)\s*([\])])")


def check_number(key: str, value: object, interval: str) -> None:
    """``value`` must be a real number (not a bool, not NaN) in ``interval``, e.g. ``"(0, 1]"``, ``"[0, inf)"``."""
    low_bracket, low, high, high_bracket = _INTERVAL.fullmatch(interval).groups()
    low, high = float(low), float(high)
    fits = (isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)
            and (low < value or (low_bracket == "[" and value == low))
            and (value < high or (high_bracket == "]" and value == high)))
    if not fits:
        raise ConfigError(key, f"a number in {interval}, got {value!r}")


def check_int(key: str, value: object, *, minimum: int) -> None:
    """``value`` must be an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(key, f"an integer >= {minimum}, got {value!r}")


def check_choice(key: str, value: object, choices: Collection) -> None:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ConfigError(key, f"one of {', '.join(map(str, choices))}, got {value!r}")


def check_bool(key: str, value: object) -> None:
    """``value`` must be true or false."""
    if not isinstance(value, bool):
        raise ConfigError(key, f"true or false, got {value!r}")
