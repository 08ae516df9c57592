"""Shared fixtures: hydra configs composed from conf/, small synthetic inputs."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from radiopath.config import CONF_DIR  # also registers the ${dirname:} resolver

# Two cores: keep torch from oversubscribing them in tests.
torch.set_num_threads(1)


@pytest.fixture
def compose_config():
    """``compose_config(name, overrides)`` -> the composed hydra config."""

    def _compose(name: str, overrides: list[str] = ()):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=name, overrides=list(overrides))

    return _compose


def conf_values(section: str, **overrides) -> dict:
    """Settings as ``radiopath/conf`` holds them, the one place their values live, with ``overrides``.

    ``section``: ``model/<name>`` (that file's ``kwargs``), ``training`` or ``node_features``
    (of ``train.yaml``). An override of a key the section lacks is an error: a typo in a test
    would otherwise pass silently.
    """
    from omegaconf import OmegaConf

    if section.startswith("model/"):
        values = OmegaConf.load(CONF_DIR / f"{section}.yaml").kwargs
    else:
        values = OmegaConf.load(CONF_DIR / "train.yaml")[section]
    values = OmegaConf.to_container(values, resolve=True)
    unknown = set(overrides) - set(values)
    if unknown:
        raise KeyError(f"{section} has no {sorted(unknown)}")
    return {**values, **overrides}
