"""Hydra/OmegaConf helpers shared by the entry points."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

# `${dirname:${data.manifest}}` lets configs place outputs beside the cohort.
if not OmegaConf.has_resolver("dirname"):
    OmegaConf.register_new_resolver("dirname", lambda path: str(Path(path).parent))


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first GPU when one is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
