"""The classify stage (``python -m radiopath.classify``): task -> splits -> evaluation -> tables, figures,
clinical evaluation (external centres, subgroups, readers, prognosis) -> report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from radiopath.classification.clinical import clinical_evaluation
from radiopath.classification.nested import check_grid
from radiopath.classification.parallel import limited_threads
from radiopath.classification.pc_importance import plot_pc_importance
from radiopath.classification.plots import plot_calibration, plot_roc
from radiopath.classification.report import render_classification_report
from radiopath.classification.results import calibration_tables, delong_table, metrics_table
from radiopath.classification.run import Evaluation, PipelineSpec, evaluate
from radiopath.classification.settings import check_evaluation, check_task
from radiopath.classification.splits import TEST, centre_splits, make_splits
from radiopath.classification.tasks import TaskData, load_task
from radiopath.entry import StageResult
from radiopath.errors import ConfigError
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
        grid = OmegaConf.to_container(entry.grid, resolve=True) if entry.get("grid") else {}
        check_grid(str(label), kwargs, grid)
        specs.append(PipelineSpec(str(label), str(entry.pipeline), kwargs, grid))
    if cfg.evaluation.nested and not any(spec.grid for spec in specs):
        raise ConfigError("evaluation.nested", "no pipeline has a grid (pipelines.LABEL.grid) to tune")
    return specs


def load_cfg_task(cfg: DictConfig) -> TaskData:
    """The task's cases from ``data.manifest`` as configured in ``cfg.task``."""
    population = OmegaConf.to_container(cfg.task.population, resolve=True) if cfg.task.population else {}
    allow_outside = bool(cfg.data.get("allow_outside_paths", False))
    negatives = OmegaConf.to_container(cfg.task.negatives, resolve=True) if cfg.task.negatives else {}
    return load_task(cfg.data.manifest, cfg.task.name, cfg.task.label, population, allow_outside,
                     negatives=negatives)


def named_centres_only(task: TaskData, ev: DictConfig) -> TaskData:
    """For ``by_centre``: the task without the cases of no listed centre, which are excluded and listed."""
    if ev.centre_column not in task.cases:
        raise ConfigError("evaluation.centre_column", f"the manifest has no {ev.centre_column!r} column")
    centres = task.cases[ev.centre_column]
    named = centres.astype(str).isin([*map(str, ev.train_centres), *map(str, ev.test_centres)]) & centres.notna()
    left_out = pd.DataFrame({"case_id": task.cases.loc[~named, "case_id"],
                             "reason": [f"centre {c!r} in neither train_centres nor test_centres"
                                        for c in centres[~named]]})
    return dataclasses.replace(task, cases=task.cases[named].reset_index(drop=True), y=task.y[named.to_numpy()],
                               excluded=pd.concat([task.excluded, left_out], ignore_index=True))


def task_splits(task: TaskData, ev: DictConfig) -> pd.DataFrame:
    """The evaluation's patient-level splits: ``random``, or ``by_centre`` with the external centres' cases."""
    if ev.split == "random":
        return make_splits(task.cases["case_id"], task.y, ev.test_fraction, ev.n_folds, ev.seed)
    return centre_splits(case_ids=task.cases["case_id"], y=task.y, centres=task.cases[ev.centre_column].astype(str),
                         train_centres=[str(c) for c in ev.train_centres],
                         test_centres=[str(c) for c in ev.test_centres], test_fraction=ev.test_fraction,
                         n_folds=ev.n_folds, seed=ev.seed)


def write_fitted_tables(evaluation: Evaluation, out: Path) -> None:
    """Each fit's own tables (``CasePipeline.fitted_tables``): ``pipelines/{label}/fold{k}_{name}.csv``, ``test_{name}.csv``."""
    for label, fold, name, table in evaluation.tables:
        part = "test" if fold == TEST else f"fold{fold}"
        atomic_write_csv(table, out / "pipelines" / label / f"{part}_{name}.csv")


def pc_importance_figures(evaluation: Evaluation, out: Path, dpi: int) -> list[tuple[Path, str]]:
    """The RGCNN paper's Fig. 3 per pipeline whose fits report ``pc_importance``: mean ± sd over its fits."""
    figures = []
    by_label: dict[str, list[pd.DataFrame]] = {}
    for label, fold, name, table in evaluation.tables:
        if name == "pc_importance":
            by_label.setdefault(label, []).append(table.assign(fold=fold))
    for label, tables in by_label.items():
        path = plot_pc_importance(pd.concat(tables, ignore_index=True),
                                  path=out / "figures" / f"pc_importance_{label}.png",
                                  title=f"{label}: random-forest importance of the principal components", dpi=dpi)
        figures.append((path, f"{label}: importance of the principal components over {len(tables)} fits "
                              "(impurity, and permutation on the training cases)"))
    return figures


def run_classification(cfg: DictConfig) -> tuple[TaskData, Evaluation, Path]:
    """Evaluate the configured pipelines and write every output under ``cfg.output_dir``."""
    check_evaluation(cfg.evaluation)
    check_task(cfg.task)
    specs = pipeline_specs(cfg)
    out = Path(cfg.output_dir)
    ev = cfg.evaluation
    task = load_cfg_task(cfg)
    if ev.split == "by_centre":
        task = named_centres_only(task, ev)
    print(task.summary())
    atomic_write_csv(task.excluded, out / "excluded.csv")
    splits = task_splits(task, ev)
    atomic_write_csv(splits, out / "splits.csv")

    evaluation = evaluate(specs, task.cases, splits, ev.seed, ev.test_model, show_progress=cfg.progress,
                          jobs=int(cfg.jobs), threads=cfg.threads, nested_folds=ev.inner_folds if ev.nested else None)
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
    if ev.nested:
        atomic_write_csv(evaluation.tuning, out / "tuning.csv")
    write_fitted_tables(evaluation, out)
    clinical = clinical_evaluation(cfg=cfg, cases=task.cases, evaluation=evaluation, out=out)
    settings = OmegaConf.to_yaml(cfg, resolve=True)
    atomic_write_text(settings, out / "settings.yaml")

    figures = []
    if not predictions.empty:
        title = f"{task.name}: test split (n = {int((splits['part'] == 'test').sum())})"
        brier = metrics[(metrics["split"] == "test") & (metrics["metric"] == "brier")].set_index("pipeline")["value"]
        figures = [
            (plot_roc(predictions, metrics, out / "figures" / "roc.png", title, cfg.report.dpi), "ROC curves"),
            (plot_calibration(calibration, brier, out / "figures" / "calibration.png", title, cfg.report.dpi),
             "Calibration, 95% bootstrap CI per bin"),
        ]
    figures += pc_importance_figures(evaluation, out, cfg.report.dpi)
    page = render_classification_report(out / "report.html", f"{cfg.report.title}: {task.name}", task.summary(), metrics, delong,
                        figures, task.excluded, evaluation.failures, settings, cfg.report.embed_images,
                        clinical=clinical, tuning=evaluation.tuning if ev.nested else None)
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
