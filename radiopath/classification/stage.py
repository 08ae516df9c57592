"""The classify stage (``python -m radiopath.classify``): task -> splits -> evaluation -> tables, figures, report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from radiopath.classification.parallel import limited_threads
from radiopath.classification.plots import plot_calibration, plot_roc
from radiopath.classification.report import render_classification_report
from radiopath.classification.results import calibration_tables, delong_table, metrics_table
from radiopath.classification.run import Evaluation, PipelineSpec, evaluate
from radiopath.classification.splits import make_splits
from radiopath.classification.tasks import TaskData, load_task
from radiopath.entry import StageResult
from radiopath.io import atomic_write_csv, atomic_write_text
from radiopath.repro import active


def pipeline_specs(cfg: DictConfig) -> list[PipelineSpec]:
    """``cfg.pipelines`` (label -> ``{pipeline, kwargs}``) as specs, resolved to plain containers."""
    if not cfg.get("pipelines"):
        raise ValueError("no pipelines to evaluate: pick an experiment (experiment_classify=NAME) or set pipelines")
    specs = []
    for label, entry in cfg.pipelines.items():
        if "pipeline" not in entry:
            raise ValueError(f"pipelines.{label} needs a 'pipeline' (registered name) entry")
        kwargs = OmegaConf.to_container(entry.kwargs, resolve=True) if entry.get("kwargs") else {}
        specs.append(PipelineSpec(str(label), str(entry.pipeline), kwargs))
    return specs


def load_cfg_task(cfg: DictConfig) -> TaskData:
    """The task's cases from ``data.manifest`` as configured in ``cfg.task``."""
    population = OmegaConf.to_container(cfg.task.population, resolve=True) if cfg.task.population else {}
    allow_outside = bool(cfg.data.get("allow_outside_paths", False))
    return load_task(cfg.data.manifest, cfg.task.name, cfg.task.label, population, allow_outside)


def run_classification(cfg: DictConfig) -> tuple[TaskData, Evaluation, Path]:
    """Evaluate the configured pipelines and write every output under ``cfg.output_dir``."""
    specs = pipeline_specs(cfg)
    out = Path(cfg.output_dir)
    ev = cfg.evaluation
    task = load_cfg_task(cfg)
    print(task.summary())
    atomic_write_csv(task.excluded, out / "excluded.csv")
    splits = make_splits(task.cases["case_id"], task.y, ev.test_fraction, ev.n_folds, ev.seed)
    atomic_write_csv(splits, out / "splits.csv")

    evaluation = evaluate(specs, task.cases, splits, ev.seed, ev.test_model, show_progress=cfg.progress,
                          jobs=int(cfg.jobs), threads=cfg.threads)
    predictions = evaluation.predictions
    metrics = metrics_table(predictions, evaluation.thresholds, ev.n_boot, ev.seed, ev.level)
    delong = delong_table(predictions, ev.level)
    calibration = calibration_tables(predictions, ev.calibration_bins, ev.n_boot, ev.seed, ev.level)
    atomic_write_csv(predictions, out / "predictions.csv")
    atomic_write_csv(evaluation.thresholds, out / "thresholds.csv")
    atomic_write_csv(metrics, out / "metrics.csv")
    atomic_write_csv(delong, out / "delong.csv")
    atomic_write_csv(calibration, out / "calibration.csv")
    atomic_write_csv(pd.DataFrame(evaluation.failures, columns=["pipeline", "error"]), out / "failures.csv")
    settings = OmegaConf.to_yaml(cfg, resolve=True)
    atomic_write_text(settings, out / "settings.yaml")

    figures = []
    if not predictions.empty:
        title = f"{task.name}: test split (n = {int((splits['fold'] < 0).sum())})"
        brier = metrics[(metrics["split"] == "test") & (metrics["metric"] == "brier")].set_index("pipeline")["value"]
        figures = [
            (plot_roc(predictions, metrics, out / "figures" / "roc.png", title, cfg.report.dpi), "ROC curves"),
            (plot_calibration(calibration, brier, out / "figures" / "calibration.png", title, cfg.report.dpi),
             "Calibration, 95% bootstrap CI per bin"),
        ]
    page = render_classification_report(out / "report.html", f"{cfg.report.title}: {task.name}", task.summary(), metrics, delong,
                        figures, task.excluded, evaluation.failures, settings, cfg.report.embed_images)
    atomic_write_text(page, out / "report.html")
    return task, evaluation, out


def run(cfg: DictConfig) -> StageResult:
    """Evaluate ``cfg.pipelines`` on ``cfg.task``; a pipeline that failed is named and the others finish."""
    with limited_threads(cfg.threads):
        task, evaluation, out = run_classification(cfg)
    record = active()
    record.input(cfg.data.manifest, "cohort manifest")
    record.input(out / "splits.csv", "splits")
    record.dataset(task=task.name, cases=len(task.y), positives=int(task.y.sum()), excluded=len(task.excluded))
    failures = [f"{pipeline}: {error}" for pipeline, error in evaluation.failures]
    return StageResult(out, "classification results (report.html)",
                       lines=[f"FAILED {failure}" for failure in failures], failures=failures)
