"""Read what a training run and its survival stage left on disk, noting every missing piece.

Nothing here raises for a missing file: a run without survival outputs, an
untrained aggregator without training curves or a run without importance files
is loaded with the gap written to ``Run.notes``, which the report shows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from radiopath.io import is_temporary

_FOLD_DIR = re.compile(r"fold(\d+)$")


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
    path = Path(path)
    notes = []
    if not path.is_dir():
        return Run(path, path.name, None, None, {}, None, {}, [f"run folder {path} does not exist"])
    config = OmegaConf.load(path / "config.yaml") if (path / "config.yaml").is_file() else None
    if config is None:
        notes.append("no config.yaml: training settings, images and graphs unknown")
    folds = pd.read_csv(path / "folds.csv", dtype={"case_id": str}) if (path / "folds.csv").is_file() else None
    if folds is None:
        notes.append("no folds.csv")
    histories = _histories(path)
    if not histories:
        trainable = config is None or OmegaConf.select(config, "model.name") != "mean"
        notes.append(
            "no training curves (no fold has a non-empty history.csv)"
            if trainable
            else "no training curves: the Mean aggregator is not trained"
        )
    importance = _importance_files(path)
    if not importance:
        notes.append("no node-importance files (fold*/importance/*.pt): no overlays")
    survival = load_survival(path / survival_subdir, notes)
    return Run(path, run_label(config, path, aggregators), config, folds, histories, survival, importance, notes)


def _fold_dirs(path: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), d) for d in path.iterdir() if d.is_dir() and (m := _FOLD_DIR.match(d.name))]
    return sorted(found)


def _histories(path: Path) -> dict[int, pd.DataFrame]:
    """Non-empty ``fold{k}/history.csv`` tables by fold."""
    histories = {}
    for k, fold_dir in _fold_dirs(path):
        file = fold_dir / "history.csv"
        if file.is_file():
            table = pd.read_csv(file)
            if not table.empty:
                histories[k] = table
    return histories


def _importance_files(path: Path) -> dict[str, Path]:
    """case_id -> its importance file (each case is a test patient of exactly one fold)."""
    return {file.stem: file for _, fold_dir in _fold_dirs(path) for file in sorted(fold_dir.glob("importance/*.pt"))
            if not is_temporary(file)}


def load_survival(path: Path, notes: list[str]) -> SurvivalOutputs | None:
    """The survival stage's tables, or None (with a note) when its metrics or summary are missing."""
    if not (path / "metrics.csv").is_file() or not (path / "summary.csv").is_file():
        notes.append(f"no survival outputs in {path} (run python -m radiopath.survival run_dir=...)")
        return None

    def optional(name: str, reader):
        if (path / name).is_file():
            return reader(path / name)
        notes.append(f"survival output {name} is missing")
        return None

    metrics = pd.read_csv(path / "metrics.csv")
    metrics["note"] = metrics["note"].fillna("")
    return SurvivalOutputs(
        path=path,
        metrics=metrics,
        summary=pd.read_csv(path / "summary.csv"),
        predictions=optional("predictions.csv", lambda p: pd.read_csv(p, dtype={"case_id": str})),
        settings=optional("settings.json", lambda p: json.loads(p.read_text(encoding="utf-8"))),
    )


def distinct_labels(runs: list[Run]) -> None:
    """Append the folder name to labels shared by several runs (e.g. same aggregator, other encoder)."""
    counts = pd.Series([run.label for run in runs]).value_counts()
    for run in runs:
        if counts[run.label] > 1:
            run.label = f"{run.label} [{run.path.name}]"
