"""The survival stage end to end: read the inputs, run the benchmark, write the outputs.

Outputs in ``output_dir`` (all written atomically, names in
:class:`radiopath.layout.SurvivalFolder`): ``metrics.csv``, ``summary.csv``,
``predictions.csv``, ``settings.json``, ``logrank.csv``, ``km_{model}.png``, and
``folds.csv`` when the folds were made here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from radiopath.entry import StageResult
from radiopath.errors import ConfigError
from radiopath.io import atomic_write_csv, atomic_write_text
from radiopath.layout import RunFolder, SurvivalFolder
from radiopath.repro import active
from radiopath.survival.benchmark import BenchmarkResult, format_summary, run_benchmark, summarise
from radiopath.survival.data import folds_from_run, folds_from_table, read_folds, read_survival, stratified_folds
from radiopath.survival.risk_groups import risk_group_analysis

log = logging.getLogger(__name__)


def output_dir_for(cfg) -> Path:
    """``output_dir``, else ``{run_dir}/survival``, else ``survival/`` beside the feature table."""
    if cfg.output_dir:
        return Path(cfg.output_dir)
    if cfg.run_dir:
        return Path(cfg.run_dir) / "survival"
    if cfg.features:
        return Path(cfg.features).parent / "survival"
    raise ConfigError("run_dir", "give run_dir=RUN (a training run) and/or features=TABLE.csv")


def _check_run_manifest(run: RunFolder, manifest: str) -> None:
    """Warn when the training run names a different cohort manifest than ``data.manifest``."""
    if run.config.is_file():
        used = OmegaConf.select(OmegaConf.load(run.config), "data.manifest", default=None)
        if used and Path(used).resolve() != Path(manifest).resolve():
            log.warning("%s was trained on %s but data.manifest is %s", run.root, used, manifest)


def _run_folds(run_dir: str) -> Path:
    """``RUN/folds.csv``; a run folder without one is a configuration error that says what to do."""
    run = RunFolder(run_dir)
    if not run.folds.is_file():
        state = "does not exist" if not run.root.is_dir() else "has no folds.csv"
        raise ConfigError("run_dir", f"{run.root} {state}: train there first (python -m radiopath.train "
                                     f"output_dir={run.root}), or leave run_dir out to make new folds "
                                     "from the feature table (features=TABLE.csv)")
    return run.folds


def load_folds(cfg, output_dir: Path) -> list:
    """The outer folds from a run folder or a feature table (new folds are written to ``folds.csv``)."""
    if cfg.features:
        table = read_survival(cfg.features)
        if cfg.run_dir:
            folds = read_folds(_run_folds(cfg.run_dir))
        else:
            folds = stratified_folds(table, n_folds=cfg.n_folds, seed=cfg.seed)
            atomic_write_csv(folds.rename_axis("case_id").reset_index(), SurvivalFolder(output_dir).folds)
        return folds_from_table(table, folds)
    if not cfg.run_dir:
        raise ConfigError("run_dir", "give run_dir=RUN (a training run) and/or features=TABLE.csv")
    _run_folds(cfg.run_dir)
    _check_run_manifest(RunFolder(cfg.run_dir), cfg.data.manifest)
    return folds_from_run(cfg.run_dir, read_survival(cfg.data.manifest))


def write_outputs(result: BenchmarkResult, summary: pd.DataFrame, logrank: pd.DataFrame, cfg, output_dir: Path) -> None:
    """The tables and ``settings.json`` (τ, grids, chosen hyperparameters per fold, seeds, config)."""
    files = SurvivalFolder(output_dir)
    atomic_write_csv(result.metrics, files.metrics)
    atomic_write_csv(summary, files.summary)
    atomic_write_csv(result.predictions, files.predictions)
    atomic_write_csv(logrank, files.logrank)
    settings = {
        "seed": cfg.seed,
        "tuning_score": cfg.tuning.score,
        "tau_quantile": cfg.metrics.tau_quantile,
        "inputs": {
            "run_dir": cfg.run_dir and str(Path(cfg.run_dir).resolve()),
            "features": cfg.features and str(Path(cfg.features).resolve()),
            "manifest": None if cfg.features else str(Path(cfg.data.manifest).resolve()),
        },
        "folds": {str(k): v for k, v in result.folds.items()},
        "errors": result.errors,
        # unresolved: only this stage's keys matter here, and they hold no interpolations
        "config": OmegaConf.to_container(cfg, resolve=False),
    }
    atomic_write_text(json.dumps(settings, indent=2, allow_nan=True) + "\n", files.settings)


def record_inputs(cfg, folds: list, output_dir: Path) -> None:
    """Hash the stage's inputs and summarise its patients in the open run record."""
    record = active()
    if cfg.features:
        record.input(cfg.features, "feature table")
    else:
        record.input(cfg.data.manifest, "cohort manifest")
        for fold in folds:
            record.input(RunFolder(cfg.run_dir).vectors(fold.fold), f"fold{fold.fold} vectors")
    record.input(RunFolder(cfg.run_dir).folds if cfg.run_dir else SurvivalFolder(output_dir).folds, "folds")
    record.dataset(
        patients=sum(len(fold.ids_test) for fold in folds),
        events=int(sum(fold.y_test["event"].sum() for fold in folds)),
        features=int(folds[0].X_train.shape[1]) if folds else 0,
        folds={str(fold.fold): {"train": len(fold.ids_train), "test": len(fold.ids_test),
                                "test_events": int(fold.y_test["event"].sum())} for fold in folds},
    )


def run_survival(cfg) -> tuple[BenchmarkResult, pd.DataFrame, Path]:
    """Run the survival benchmark and the risk-group analysis; returns result, summary and output folder."""
    output_dir = output_dir_for(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    folds = load_folds(cfg, output_dir)
    if not any(fold.y_test["event"].any() for fold in folds):
        patients = sum(len(fold.ids_test) for fold in folds)
        raise ValueError(f"all {patients} patients are censored (os_event = 0): no survival model can be fitted")
    record_inputs(cfg, folds, output_dir)
    result = run_benchmark(folds, cfg)
    summary = summarise(result.metrics)
    logrank = risk_group_analysis(result.predictions, output_dir, cfg)
    write_outputs(result, summary, logrank, cfg, output_dir)
    return result, summary, output_dir


def run(cfg) -> StageResult:
    """The survival benchmark of ``cfg``: its summary table, and every model fit that failed."""
    result, summary, output_dir = run_survival(cfg)
    lines = [format_summary(summary), *(f"FAILED {error}" for error in result.errors)]
    return StageResult(output_dir, "survival benchmark", lines=lines, failures=list(result.errors))
