"""Local checkpoint files -> encoder weights, with errors that say what went wrong.

Weights are never downloaded: every encoder takes ``checkpoint=`` a path on disk
(the published file, unmodified). :func:`load_state_dict` reads it safely
(``torch.load(weights_only=True)`` or safetensors), unwraps the containers
training scripts save (``{"model": ...}``, ``{"teacher": ...}``, Lightning's
``{"state_dict": ...}``) and selects one tower by key prefix. :func:`load_into`
checks keys and shapes before loading and names every mismatch. Without a
checkpoint, :func:`initialise` leaves the network random and warns loudly.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import logging
import pickle
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

# Searched in this order, repeatedly, so {"model": {"state_dict": ...}} unwraps too.
# DINO checkpoints hold a "teacher" and a "student": the teacher is the published model.
CONTAINER_KEYS = ("state_dict", "model", "teacher", "module")
# Training scripts often pickle their argparse options beside the weights (DINO's
# "args"); a Namespace only holds plain values, so it is safe to unpickle.
SAFE_GLOBALS = [argparse.Namespace]
SHOWN_KEYS = 8  # how many offending keys an error message lists


# Full unpickling runs whatever code the file names: off unless the user opts in
# (trust_pickled_checkpoints=true in conf/encode.yaml) for the duration of a block.
_TRUST_PICKLES = contextvars.ContextVar("radiopath_trust_pickled_checkpoints", default=False)


@contextlib.contextmanager
def checkpoint_unpickling(trusted: bool):
    """Within the block, a checkpoint that needs full unpickling is loaded (``trusted``) or refused."""
    token = _TRUST_PICKLES.set(bool(trusted))
    try:
        yield
    finally:
        _TRUST_PICKLES.reset(token)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or does not fit the encoder."""


class RandomWeightsWarning(UserWarning):
    """An encoder runs without pretrained weights: its features are random."""


def load_state_dict(
    path: str | Path,
    *,
    prefixes: Sequence[str] = (),
    container_keys: Sequence[str] = CONTAINER_KEYS,
) -> dict[str, torch.Tensor]:
    """Read a local checkpoint into a flat ``name -> tensor`` dict.

    Containers named in ``container_keys`` are unwrapped. With ``prefixes``, the
    first prefix that starts any key selects the tower: keys with it are kept,
    stripped of it, and all others (text towers, heads) dropped; when none
    matches, the keys are returned unchanged (the file already has the plain layout).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    state = _tensors_only(path, unwrap(_read(path), container_keys))
    return select_prefix(state, prefixes)


def _read(path: Path) -> object:
    """The file's content: safetensors by suffix, else a weights-only ``torch.load``.

    A file that needs full unpickling is refused, unless inside ``checkpoint_unpickling(True)``.
    """
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not _TRUST_PICKLES.get():
            raise CheckpointError(_unsafe_pickle_message(path, error)) from None
    log.warning("%s needs full unpickling; loading it because trust_pickled_checkpoints is true", path)
    return torch.load(path, map_location="cpu", weights_only=False)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file (the package comes with timm)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(f"{path} is a .safetensors file but the safetensors package is not installed") from None
    return load_file(str(path), device="cpu")


def _unsafe_pickle_message(path: Path, error: Exception) -> str:
    """Explain a refused pickle and how to turn the file into a plain state dict."""
    try:
        unsafe = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # legacy (non-zip) files cannot be listed: torch's own message names the object
        unsafe = ""
    unsafe = unsafe or next((line.strip() for line in str(error).splitlines() if "GLOBAL" in line), "unknown")
    return (
        f"{path} holds pickled Python objects besides tensors ({unsafe}), which radiopath does not "
        "unpickle (weights_only=True: unpickling can run arbitrary code). If you trust the file, "
        "convert it once to a plain state dict:\n"
        f"  python -c \"import torch; c = torch.load('{path}', weights_only=False); torch.save({{k: v for k, v in "
        "c.items() if torch.is_tensor(v) or isinstance(v, dict) and all(map(torch.is_tensor, v.values()))}, "
        f"'{path.with_suffix('.weights.pt')}')\"\n"
        "and point the checkpoint setting at the new file, or set trust_pickled_checkpoints=true."
    )


def unwrap(content: object, container_keys: Sequence[str] = CONTAINER_KEYS) -> Mapping:
    """Descend into the first container key holding a mapping, as long as there is one."""
    while isinstance(content, Mapping):
        inner = next((content[key] for key in container_keys if isinstance(content.get(key), Mapping)), None)
        if inner is None:
            return content
        content = inner
    raise CheckpointError(f"checkpoint content is a {type(content).__name__}, not a state dict")


def _tensors_only(path: Path, content: Mapping) -> dict[str, torch.Tensor]:
    """The tensor entries; bookkeeping such as ``epoch`` is dropped."""
    state = {str(k): v for k, v in content.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(
            f"{path} contains no tensors at its top level or under {list(CONTAINER_KEYS)}; "
            f"its keys are {_first(content.keys())}"
        )
    return state


def select_prefix(state: Mapping[str, torch.Tensor], prefixes: Sequence[str]) -> dict[str, torch.Tensor]:
    """Keep the keys under the first prefix that occurs, stripped; unchanged if none occurs."""
    for prefix in prefixes:
        if any(key.startswith(prefix) for key in state):
            return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    return dict(state)


def load_into(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    ignore_missing: Sequence[str] = (),
    source: str = "checkpoint",
) -> None:
    """Load ``state_dict`` into ``model``; raise :class:`CheckpointError` naming every mismatch.

    Shape mismatches always fail; missing and unexpected keys fail when ``strict``.
    ``ignore_missing`` holds regular expressions for model keys a published file
    legitimately lacks (they keep their initial values).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not _matches(k, ignore_missing)]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    problems = [f"{len(shapes)} shape mismatches: {_first(shapes)}"] if shapes else []
    if strict and missing:
        problems.append(f"{len(missing)} keys missing from the checkpoint: {_first(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys in the checkpoint: {_first(unexpected)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__} ({len(expected)} tensors expected, "
            f"{len(state_dict)} given after key mapping):\n  " + "\n  ".join(problems)
            + "\nIs it the published weight file for this encoder, and do the architecture kwargs match it?"
        )
    model.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=False)


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(re.fullmatch(pattern, key) for pattern in patterns)


def _first(items: Iterable) -> str:
    """The first few items, for an error message."""
    items = list(items)
    shown = ", ".join(str(item) for item in items[:SHOWN_KEYS])
    return shown + (f", ... ({len(items) - SHOWN_KEYS} more)" if len(items) > SHOWN_KEYS else "")


def warn_random_weights(encoder: str, config_key: str, weight_file: str) -> None:
    """Warn (``warnings`` and ``logging``) that ``encoder`` has no pretrained weights."""
    message = (
        f"!!! encoder {encoder!r} has NO pretrained weights: it is randomly initialised and its "
        f"features are RANDOM, fit for tests only. Set {config_key}=<path to {weight_file}> "
        "to load the published weights. !!!"
    )
    warnings.warn(message, RandomWeightsWarning, stacklevel=3)
    log.warning(message)


def initialise(
    model: nn.Module,
    checkpoint: str | Path | None,
    *,
    encoder: str,
    config_key: str,
    weight_file: str,
    prefixes: Sequence[str] = (),
    adapt: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    ignore_missing: Sequence[str] = (),
) -> None:
    """Load ``checkpoint`` into ``model`` through ``prefixes`` and ``adapt``, or warn that it stays random.

    ``weight_file`` names the published file in the warning; ``config_key`` is the
    setting the user must fill in.
    """
    if checkpoint is None:
        warn_random_weights(encoder, config_key, weight_file)
        return
    state = load_state_dict(checkpoint, prefixes=prefixes)
    if adapt is not None:
        state = adapt(state)
    load_into(model, state, ignore_missing=ignore_missing, source=f"checkpoint {checkpoint} for encoder {encoder!r}")
    log.info("encoder %r: loaded %d tensors from %s", encoder, len(state), checkpoint)
