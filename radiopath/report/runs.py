"""Read what a training run and its survival stage left on disk, noting every missing piece.

Nothing here raises for a missing file: a run without survival outputs, an
untrained aggregator without training curves or a run without importance files
is loaded with the gap written to ``Run.notes``, which the report shows. File names
come from :class:`~radiopath.layout.RunFolder` and :class:`~radiopath.layout.SurvivalFolder`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from radiopath.layout import RunFolder, SurvivalFolder


@dataclass
class SurvivalOutputs:
    """The files of ``python -m radiopath.survival`` for one run (``None`` where absent)."""

    path: Path
    metrics: pd.DataFrame
    summary: pd.DataFrame
    predictions: pd.DataFrame | None
    settings: dict | None


@dataclass
class Run:
    """One training run as the report sees it."""

    path: Path
    label: str
    config: DictConfig | None
    folds: pd.DataFrame | None
    histories: dict[int, pd.DataFrame]
    survival: SurvivalOutputs | None
    importance: dict[str, Path]
    notes: list[str] = field(default_factory=list)

    @property
    def n_folds(self) -> int | None:
        return None if self.folds is None else int(self.folds["fold"].nunique())


def run_label(config: DictConfig | None, path: Path, aggregators: dict) -> str:
    """``"SPARRA (radiology+pathology)"`` from the run's config, else the folder name."""
    if config is None or OmegaConf.select(config, "model.name") is None:
        return path.name
    name = config.model.name
    modalities = "+".join(OmegaConf.select(config, "modalities", default=[]) or [])
    display = aggregators.get(name, name)
    return f"{display} ({modalities})" if modalities else display


def load_run(path: str | Path, survival_subdir: str, aggregators: dict) -> Run:
    """Everything the report uses from ``path``; gaps go to ``notes``."""
    run = RunFolder(path)
    path = run.root
    notes = []
    if not path.is_dir():
        return Run(path, path.name, None, None, {}, None, {}, [f"run folder {path} does not exist"])
    config = OmegaConf.load(run.config) if run.config.is_file() else None
    if config is None:
        notes.append(f"no {run.config.name}: training settings, images and graphs unknown")
    folds = pd.read_csv(run.folds, dtype={"case_id": str}) if run.folds.is_file() else None
    if folds is None:
        notes.append(f"no {run.folds.name}")
    histories = _histories(run)
    if not histories:
        trainable = config is None or OmegaConf.select(config, "model.name") != "mean"
        notes.append(
            "no training curves (no fold has a non-empty history.csv)"
            if trainable
            else "no training curves: the Mean aggregator is not trained"
        )
    importance = run.importance_files()
    if not importance:
        notes.append("no node-importance files (fold*/importance/*.pt): no overlays")
    survival = load_survival(path / survival_subdir, notes)
    return Run(path, run_label(config, path, aggregators), config, folds, histories, survival, importance, notes)


def _histories(run: RunFolder) -> dict[int, pd.DataFrame]:
    """Non-empty ``fold{k}/history.csv`` tables by fold."""
    histories = {}
    for k, _ in run.fold_dirs():
        if run.history(k).is_file():
            table = pd.read_csv(run.history(k))
            if not table.empty:
                histories[k] = table
    return histories


def load_survival(path: Path, notes: list[str]) -> SurvivalOutputs | None:
    """The survival stage's tables, or None (with a note) when its metrics or summary are missing."""
    files = SurvivalFolder(path)
    if not files.metrics.is_file() or not files.summary.is_file():
        notes.append(f"no survival outputs in {path} (run python -m radiopath.survival run_dir=...)")
        return None

    def optional(file: Path, reader):
        if file.is_file():
            return reader(file)
        notes.append(f"survival output {file.name} is missing")
        return None

    metrics = pd.read_csv(files.metrics)
    metrics["note"] = metrics["note"].fillna("")
    return SurvivalOutputs(
        path=path,
        metrics=metrics,
        summary=pd.read_csv(files.summary),
        predictions=optional(files.predictions, lambda p: pd.read_csv(p, dtype={"case_id": str})),
        settings=optional(files.settings, lambda p: json.loads(p.read_text(encoding="utf-8"))),
    )


def distinct_labels(runs: list[Run]) -> None:
    """Append the folder name to labels shared by several runs (e.g. same aggregator, other encoder)."""
    counts = pd.Series([run.label for run in runs]).value_counts()
    for run in runs:
        if counts[run.label] > 1:
            run.label = f"{run.label} [{run.path.name}]"
