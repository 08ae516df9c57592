"""The classify stage's evaluation and task settings, checked before any case is read (errors name the key)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from radiopath.classification.run import TEST_MODELS
from radiopath.errors import ConfigError, check_bool, check_choice, check_int, check_number

SPLITS = ("random", "by_centre")


def _names(key: str, value: object) -> list[str]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ConfigError(key, f"a list, got {value!r}")
    return [str(v) for v in value]


def check_evaluation(ev: DictConfig) -> None:
    """``evaluation.*``: split, centres, folds, nested CV, bootstrap and prognosis settings."""
    ev = OmegaConf.to_container(ev, resolve=True)
    check_choice("evaluation.split", ev["split"], SPLITS)
    check_choice("evaluation.test_model", ev["test_model"], TEST_MODELS)
    check_number("evaluation.test_fraction", ev["test_fraction"], "(0, 1)")
    check_int("evaluation.n_folds", ev["n_folds"], minimum=2)
    check_int("evaluation.n_boot", ev["n_boot"], minimum=1)
    check_number("evaluation.level", ev["level"], "(0, 1)")
    check_bool("evaluation.nested", ev["nested"])
    check_int("evaluation.inner_folds", ev["inner_folds"], minimum=2)
    train, test = _names("evaluation.train_centres", ev["train_centres"]), _names("evaluation.test_centres",
                                                                                  ev["test_centres"])
    if ev["split"] == "by_centre":
        if not train or not test:
            raise ConfigError("evaluation.train_centres" if not train else "evaluation.test_centres",
                              "split=by_centre needs at least one centre in train_centres and in test_centres")
        if set(train) & set(test):
            raise ConfigError("evaluation.test_centres", f"also in train_centres: {sorted(set(train) & set(test))}")
    _names("evaluation.subgroups", ev["subgroups"])
    prognosis = ev["prognosis"]
    _names("evaluation.prognosis.endpoints", prognosis["endpoints"])
    _names("evaluation.prognosis.covariates", prognosis["covariates"])
    _names("evaluation.prognosis.markers", prognosis["markers"])
    check_bool("evaluation.prognosis.malignant_only", prognosis["malignant_only"])
    check_number("evaluation.prognosis.horizon_years", prognosis["horizon_years"], "(0, inf)")
    check_int("evaluation.prognosis.min_events", prognosis["min_events"], minimum=1)
    check_number("evaluation.prognosis.min_events_per_variable", prognosis["min_events_per_variable"], "[0, inf)")
    check_int("evaluation.prognosis.n_boot", prognosis["n_boot"], minimum=1)


def check_task(task: DictConfig) -> None:
    """``task.*``: the mappings that pick cases, the prognosis switch, the reader column prefix."""
    for key in ("population", "negatives", "prognosis", "reader_prefix"):
        if key not in task:
            raise ConfigError(f"task.{key}", "missing: every task file names it (see conf/classify/task/)")
    for key in ("population", "negatives"):
        if not isinstance(OmegaConf.to_container(task[key]) if task[key] is not None else None, Mapping):
            raise ConfigError(f"task.{key}", f"a mapping column -> value, got {task[key]!r}")
    check_bool("task.prognosis", task.prognosis)
    if task.reader_prefix is not None and not (isinstance(task.reader_prefix, str) and task.reader_prefix):
        raise ConfigError("task.reader_prefix", f"a column prefix or null, got {task.reader_prefix!r}")
