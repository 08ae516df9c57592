"""A bad setting fails at start with a ConfigError naming its config key, not deep in torch."""

import pytest
from omegaconf import OmegaConf

from conftest import conf_values
from radiopath.config import CONF_DIR
from radiopath.errors import ConfigError
from radiopath.models import check_model_config
from radiopath.training.scaling import NodeScaler
from radiopath.training.trainer import TrainSettings
from radiopath.training.tuning import tuning_grid

MODALITIES = ["radiology", "pathology"]


def refused(call, *args, **kwargs) -> ConfigError:
    """The ConfigError ``call`` raises (it must raise one)."""
    with pytest.raises(ConfigError) as error:
        call(*args, **kwargs)
    return error.value


# --- model.name and model.kwargs ---------------------------------------------------------

@pytest.mark.parametrize("name", ["sparra", "sparra_paper", "abmil", "mean"])
def test_every_model_config_passes(name):
    cfg = OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")
    check_model_config(cfg.name, OmegaConf.to_container(cfg.kwargs), modalities=MODALITIES)


def test_an_unknown_aggregator_names_model_name_and_the_known_ones():
    error = refused(check_model_config, "sparrow", {}, modalities=MODALITIES)
    assert error.key == "model.name"
    assert "'sparrow'" in error.problem and "abmil, mean, sparra" in error.problem


@pytest.mark.parametrize("ratio", [-0.2, 0, 0.0, 1.5, 2, True, "half", float("nan")])
def test_a_ratio_outside_0_1_is_refused(ratio):
    error = refused(check_model_config, "sparra", conf_values("model/sparra", ratio=ratio), modalities=MODALITIES)
    assert error.key == "model.kwargs.ratio" and "(0, 1]" in error.problem


def test_a_per_modality_ratio_is_checked_per_modality():
    kwargs = conf_values("model/sparra", ratio={"radiology": 0.5, "pathology": 1.5})
    assert refused(check_model_config, "sparra", kwargs, modalities=MODALITIES).key == "model.kwargs.ratio.pathology"
    kwargs = conf_values("model/sparra", ratio={"radiology": 0.5})
    error = refused(check_model_config, "sparra", kwargs, modalities=MODALITIES)
    assert error.key == "model.kwargs.ratio" and "pathology" in error.problem
    check_model_config("sparra", kwargs, modalities=["radiology"])  # only the run's modalities need one


@pytest.mark.parametrize("name, key", [("abmil", "ratio"), ("sparra", "ratios"), ("mean", "hidden")])
def test_an_unexpected_keyword_is_named(name, key):
    kwargs = {**conf_values(f"model/{'sparra_paper' if name == 'sparra' else name}"), key: 0.2}
    error = refused(check_model_config, name, kwargs, modalities=MODALITIES)
    assert error.key == f"model.kwargs.{key}" and "not a setting" in error.problem


def test_a_missing_keyword_is_named():
    kwargs = conf_values("model/abmil")
    del kwargs["dropout"]
    error = refused(check_model_config, "abmil", kwargs, modalities=MODALITIES)
    assert error.key == "model.kwargs.dropout" and "missing" in error.problem


@pytest.mark.parametrize("name, key, value", [
    ("sparra", "hidden", 0), ("sparra", "hidden", 8.5), ("sparra", "attention_dim", -1),
    ("sparra", "dropout", 1.0), ("sparra", "dropout", -0.1), ("sparra", "conv", "gcnn"),
    ("sparra", "min_nodes", 0), ("sparra", "score", "max"), ("sparra", "beta0", 0.0), ("sparra", "alpha0", -2.0),
    ("sparra", "lambda0", 0), ("sparra", "tau", -1.0), ("sparra", "tau_vi", -0.1), ("sparra", "mu0", "zero"),
    ("sparra", "weight_norm", "graph"), ("sparra", "reduction", "max"), ("sparra", "gamma_kl", "yes"),
    ("sparra", "residual", 1), ("abmil", "hidden", 0), ("abmil", "dropout", 1.5),
])
def test_a_bad_model_value_is_named(name, key, value):
    kwargs = conf_values(f"model/{name}", **{key: value})
    assert refused(check_model_config, name, kwargs, modalities=MODALITIES).key == f"model.kwargs.{key}"


# --- training and node_features ------------------------------------------------------------

def test_the_training_settings_of_train_yaml_pass(compose_config):
    cfg = compose_config("train")
    settings = TrainSettings.from_config(OmegaConf.to_container(cfg.training))
    assert settings == TrainSettings(**conf_values("training"))


@pytest.mark.parametrize("key, value", [
    ("lr", 0.0), ("lr", -1e-3), ("lr", "fast"), ("epochs", 0), ("epochs", 2.5), ("batch_size", 0),
    ("eval_batch_size", 0), ("eval_every", 0), ("warmup_epochs", -1), ("weight_decay", -1e-4), ("ties", "peto"),
])
def test_a_bad_training_value_is_named(key, value):
    error = refused(TrainSettings, **conf_values("training", **{key: value}))
    assert error.key == f"training.{key}"


def test_an_unknown_or_missing_training_key_is_named():
    assert refused(TrainSettings.from_config, {**conf_values("training"), "epoch": 3}).key == "training.epoch"
    values = conf_values("training")
    del values["lr"]
    assert refused(TrainSettings.from_config, values).key == "training.lr"


@pytest.mark.parametrize("key, value", [("center", "slide"), ("components", 0), ("components", 1.5)])
def test_a_bad_node_features_value_is_named(key, value):
    error = refused(NodeScaler, **conf_values("node_features", **{key: value}))
    assert error.key == f"node_features.{key}"


# --- the training stage: checked before anything is read ------------------------------------

def test_a_bad_value_in_the_tuning_grid_fails_at_start(compose_config):
    cfg = compose_config("train", ["tune.enabled=true", "tune.grid={model.kwargs.ratio:[0.5,1.5]}"])
    error = refused(tuning_grid, cfg)
    assert error.key == "model.kwargs.ratio" and "tune.grid point" in error.problem


@pytest.mark.parametrize("override, key", [
    ("model.name=sparrow", "model.name"),
    ("model.kwargs.ratio=1.5", "model.kwargs.ratio"),
    ("model.kwargs.ratio=-0.5", "model.kwargs.ratio"),
    ("+model.kwargs.ratios=0.5", "model.kwargs.ratios"),
    ("training.lr=0", "training.lr"),
    ("training.epochs=0", "training.epochs"),
    ("training.batch_size=0", "training.batch_size"),
    ("node_features.center=slide", "node_features.center"),
    ("node_features.components=0", "node_features.components"),
])
def test_the_training_stage_names_the_key_before_loading_data(compose_config, tmp_path, override, key):
    from radiopath.training.stage import run_training

    absent = tmp_path / "absent"
    cfg = compose_config("train", [f"data.manifest={absent / 'manifest.csv'}", f"data.graph_dir={absent}",
                                   f"output_dir={tmp_path / 'run'}", override])
    assert refused(run_training, cfg).key == key  # not the missing manifest: nothing was read
    assert not (tmp_path / "run").exists()
