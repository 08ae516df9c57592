"""One registry shape for everything built by name (aggregators, encoders, classification pipelines).

In the spirit of timm's ``register_model`` / ``create_model``::

    AGGREGATORS = Registry("aggregator")

    @AGGREGATORS.register("mean")
    class MeanAggregator: ...

    AGGREGATORS.create("mean", in_dims, **kwargs)

An entry may stand for a family of names: ``@ENCODERS.register("timm", member="model_name")``
makes ``ENCODERS.create("timm:resnet18")`` call the builder with ``model_name="resnet18"``.

A registry may name the modules whose import registers its built-in entries;
they are imported on first use, so a registry never needs importing them by hand
and heavy optional dependencies load only when asked for.
"""

from __future__ import annotations

import functools
import importlib
from typing import Callable, Iterable, Iterator


class UnknownNameError(LookupError):
    """A name no registry entry has; the message lists the known names."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(self.known)}")


class Registry:
    """Names -> builders (classes or functions) of one kind of thing."""

    def __init__(self, kind: str, builtin_modules: Iterable[str] = ()):
        self.kind = kind
        self._builtin_modules = tuple(builtin_modules)
        self._loaded = not self._builtin_modules
        self._builders: dict[str, Callable] = {}
        self._families: dict[str, tuple[Callable, str]] = {}  # prefix -> (builder, its keyword for the rest)

    def register(self, name: str, *, member: str | None = None) -> Callable[[Callable], Callable]:
        """Decorator: register ``builder`` under ``name`` (twice is an error).

        With ``member``, ``name`` is a family: ``"{name}:{rest}"`` builds ``builder(**{member: rest}, ...)``.
        """

        def decorate(builder: Callable) -> Callable:
            if name in self._builders or name in self._families:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if member is None:
                self._builders[name] = builder
            else:
                self._families[name] = builder, member
            return builder

        return decorate

    def get(self, name: str) -> Callable:
        """The builder registered as ``name``; :class:`UnknownNameError` otherwise."""
        self._load_builtin()
        if name in self._builders:
            return self._builders[name]
        prefix, _, rest = str(name).partition(":")
        if prefix in self._families and rest:
            builder, member = self._families[prefix]
            return functools.partial(builder, **{member: rest})
        raise UnknownNameError(self.kind, name, self.names())

    def create(self, name: str, *args, **kwargs):
        """Build the ``name`` entry with these arguments."""
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        """The registered names, sorted; a family reads ``prefix:<member>``."""
        self._load_builtin()
        return sorted([*self._builders, *(f"{p}:<{m}>" for p, (_, m) in self._families.items())])

    def __contains__(self, name: object) -> bool:
        try:
            self.get(name)
        except UnknownNameError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _load_builtin(self) -> None:
        if not self._loaded:
            self._loaded = True  # first: a module that asks its own registry must not recurse
            for module in self._builtin_modules:
                importlib.import_module(module)
