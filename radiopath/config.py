"""Hydra/OmegaConf helpers shared by the entry points."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

# The hydra configuration ships inside the package, so an installed radiopath finds it anywhere.
CONF_DIR = Path(__file__).resolve().parent / "conf"

# `${dirname:${data.manifest}}` lets configs place outputs beside the cohort.
if not OmegaConf.has_resolver("dirname"):
    OmegaConf.register_new_resolver("dirname", lambda path: str(Path(path).parent))


def resolve_device(name: str):
    """``auto`` -> the first GPU when one is present, else the CPU (a ``torch.device``)."""
    import torch  # here, so that the lightweight entry points do not import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
