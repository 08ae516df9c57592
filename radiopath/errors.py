"""Errors that name the case and the problem."""

from __future__ import annotations


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
