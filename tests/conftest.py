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
