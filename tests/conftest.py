"""Shared fixtures and settings: hydra configs composed from radiopath/conf, commands run as a user runs them,
tiny demo cohorts and models.

Fixtures that module-scoped fixtures also need (``compose_config``, ``run_command``, ``start_command``) are
session-scoped; they hold no state. The settings below are plain constants, imported where needed
(``from conftest import TINY_DEMO``).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import radiopath
from radiopath.config import CONF_DIR  # also registers the ${dirname:} resolver

# Two cores: keep torch from oversubscribing them in tests.
torch.set_num_threads(1)

# make_demo_cohort(root, n, seed, **TINY_DEMO): small CTs and slides, quick to draw and to encode.
TINY_DEMO = {
    "ct": {"shape": [64, 64, 20], "spacing": [1.6, 1.6, 5.0]},
    "wsi": {"size_px": [1024, 1024]},
    "wsi_pattern": {"radius_um": [30.0, 60.0]},
}
# A one-block ViT keeps the pathology encoder fast; radiomics maps are the CT default.
SMALL_ENCODERS = [
    "encoder/pathology=hipt",
    "+encoder.pathology.kwargs.depth=1",
    "+encoder.pathology.kwargs.embed_dim=32",
    "+encoder.pathology.kwargs.num_heads=2",
]
# A tiny attention aggregator (ABMIL, SPARRA): the runs check the plumbing, not the method.
TINY_MODEL = ["model.kwargs.hidden=8", "model.kwargs.attention_dim=4"]


@pytest.fixture(scope="session")
def compose_config():
    """``compose_config(name, overrides)`` -> the composed hydra config."""

    def _compose(name: str, overrides: list[str] = ()):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=name, overrides=list(overrides))

    return _compose


def command_env() -> dict[str, str]:
    """The environment for a command: this one, with the ``radiopath`` that pytest imported first on the path.

    A command started outside the checkout would otherwise import whatever the virtualenv's (editable)
    install points at, which need not be the code under test.
    """
    source = str(Path(radiopath.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="session")
def command_cwd(tmp_path_factory) -> Path:
    """An empty folder outside the checkout that commands run in unless a test names another."""
    return tmp_path_factory.mktemp("cwd")


@pytest.fixture(scope="session")
def run_command(command_cwd):
    """``run_command(command, *overrides, cwd=None, timeout=600, check=True)`` runs ``python -m
    radiopath.<command> overrides...`` to its end and returns the ``CompletedProcess`` (text stdout and stderr).

    It runs in ``cwd``, by default ``command_cwd`` (the package carries its config), on the code under test
    (``command_env``). With ``check`` a non-zero exit fails the test, showing the command's stdout and the end
    of its stderr.
    """

    def _run(command: str, *overrides: str, cwd: Path | None = None, timeout: float = 600, check: bool = True):
        result = subprocess.run([sys.executable, "-m", f"radiopath.{command}", *overrides], cwd=cwd or command_cwd,
                                env=command_env(), capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"radiopath.{command} failed ({result.returncode}):\n{result.stdout}\n"
                                 f"{result.stderr[-4000:]}")
        return result

    return _run


@pytest.fixture(scope="session")
def start_command(command_cwd):
    """``start_command(command, *overrides, cwd=None)`` starts ``python -m radiopath.<command> overrides...``
    and returns its ``Popen`` at once: stdout and stderr in one text pipe, the process leading its own
    process group (``os.killpg(process.pid, ...)`` ends it with its workers).
    """

    def _start(command: str, *overrides: str, cwd: Path | None = None) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", f"radiopath.{command}", *overrides], cwd=cwd or command_cwd,
                                env=command_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    return _start


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


def pipeline_kwargs(name: str, **values) -> dict:
    """A classification pipeline's kwargs as ``radiopath/conf/classify/pipeline/{name}.yaml`` holds them, with ``values``.

    Settings the file interpolates from the rest of the config (``${task.label}``, ``${device}``, ...)
    must be among ``values``; a key the file lacks is an error, as a typo would otherwise pass silently.
    """
    from omegaconf import OmegaConf

    kwargs = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "classify" / "pipeline" / f"{name}.yaml").kwargs)
    unknown = set(values) - set(kwargs)
    if unknown:
        raise KeyError(f"{name}.yaml has no {sorted(unknown)}")
    kwargs.update(values)
    unset = [key for key, value in kwargs.items() if isinstance(value, str) and value.startswith("${")]
    if unset:
        raise KeyError(f"{name}.yaml interpolates {unset}: give their values")
    return kwargs
