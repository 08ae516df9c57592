"""Assemble the report: tables, figures and settings of several runs into ``output/report.html``.

Outputs (all written atomically): ``report.html``, ``table.md``, ``table.csv``,
with planted ground truth ``importance_auroc.csv`` (per run and modality) and
``importance_auroc_patients.csv`` (per patient), and, unless ``embed_images=true``,
the PNGs under ``figures/``. A missing piece of a run (no survival stage, no
importance files, no truth, an image that cannot be read) becomes a note in the
report, never an exception.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from radiopath.data.manifest import Manifest, load_manifest
from radiopath.entry import StageResult
from radiopath.io import atomic_write_csv, atomic_write_text
from radiopath.layout import RECORD_NAME, RunFolder
from radiopath.report import checklist, html, overlays, plots, recovery
from radiopath.repro import active
from radiopath.report.runs import Run, distinct_labels, load_run
from radiopath.report.table import comparison_table, to_csv_frame, to_markdown
from radiopath.report.truth import TRUTH_FILE, CohortTruth, find_truth

log = logging.getLogger(__name__)


def _slug(index: int, run: Run) -> str:
    return f"run{index}_" + re.sub(r"[^A-Za-z0-9]+", "-", run.path.name).strip("-")


def table_section(runs: list[Run], table: pd.DataFrame, cfg) -> str:
    """Table 1 and the metric explanations."""
    metrics = OmegaConf.to_container(cfg.metrics)
    missing = [f"{run.label}: no survival outputs, not in the table" for run in runs if run.survival is None]
    if table.empty:
        body = "<p>No run has survival outputs: nothing to compare.</p>"
    else:
        body = html.comparison_table(table, metrics) + (
            "<p>Mean ± sample standard deviation over the outer test folds; <strong>bold</strong>: best aggregator "
            "for that survival model and metric; N/A: no fold could compute the metric.</p>"
        )
    explanations = "".join(
        f"<li><b>{html.escape(spec['label'])}</b>: {html.escape(spec['explanation'])}</li>" for spec in metrics.values()
    )
    return body + html.notes(missing) + f"<h3>Metrics</h3><ul>{explanations}</ul>"


def runs_section(runs: list[Run]) -> str:
    """One line per run, then each run's missing pieces."""
    rows = []
    for run in runs:
        config = run.config or OmegaConf.create()
        rows.append({
            "run": run.label,
            "folder": str(run.path),
            "modalities": "+".join(OmegaConf.select(config, "modalities", default=[]) or []),
            "folds": run.n_folds or "?",
            "patients": "?" if run.folds is None else len(run.folds),
            "trained folds": len(run.histories),
            "importance files": len(run.importance),
            "survival models": "" if run.survival is None else ", ".join(dict.fromkeys(run.survival.summary["model"])),
        })
    body = html.simple_table(pd.DataFrame(rows))
    for run in runs:
        if run.notes:
            body += f"<h3>{html.escape(run.label)}</h3>" + html.notes(run.notes)
    return body


def metric_section(runs: list[Run], figures: Path, cfg) -> str:
    """Figures 2–3: per-fold distributions and mean ± std per aggregator and survival model."""
    table = plots.fold_metrics(runs)
    if table.empty:
        return "<p>No survival outputs.</p>"
    metrics = OmegaConf.to_container(cfg.metrics)
    parts = []
    for kind, caption in (("box", "per-fold values (dots) and their spread"), ("bar", "mean ± std over folds")):
        path = plots.metric_figure(table, metrics, kind, figures / f"metrics_{kind}.png", cfg.figures.dpi,
                                   cfg.figures.colormap)
        parts.append(html.image(path, Path(cfg.output), cfg.embed_images, caption))
    return "".join(parts)


def km_section(runs: list[Run], slugs: list[str], figures: Path, cfg) -> str:
    """Figure 4: per survival model, the risk groups of every run side by side."""
    by_model: dict[str, list[str]] = {}
    problems = []
    for run, slug in zip(runs, slugs):
        panels, reasons = plots.km_panels(run, figures, slug)
        problems += [f"{run.label}: {reason}" for reason in reasons]
        for model, path, p_value in panels:
            p_text = "n/a" if pd.isna(p_value) else f"{p_value:.3g}"
            caption = f"{run.label} + {model}: log-rank p = {p_text}"
            by_model.setdefault(model, []).append(html.image(path, Path(cfg.output), cfg.embed_images, caption))
    if not by_model:
        return "<p>No risk groups: no run has survival predictions.</p>" + html.notes(problems)
    body = "<p>Test patients of every fold pooled; each fold's patients are split at that fold's own threshold.</p>"
    for model, images in by_model.items():
        body += f'<h3>{html.escape(model)}</h3><div class="grid">{"".join(images)}</div>'
    return body + html.notes(problems)


def training_section(runs: list[Run], slugs: list[str], figures: Path, cfg) -> str:
    """Loss and C-index per epoch for every trained run."""
    parts = [
        html.image(plots.training_curves(run, figures / f"training_{slug}.png", cfg.figures.dpi), Path(cfg.output),
                   cfg.embed_images, run.label)
        for run, slug in zip(runs, slugs)
        if run.histories
    ]
    untrained = [f"{run.label}: no training curves" for run in runs if not run.histories]
    return ("".join(parts) or "<p>No trained run.</p>") + html.notes(untrained)


def _manifest(run: Run, manifests: dict[str, Manifest]) -> Manifest:
    """The run's cohort manifest, read once per report."""
    data = run.config.data
    if data.manifest not in manifests:
        manifests[data.manifest] = load_manifest(data.manifest, allow_outside=data.get("allow_outside_paths", False))
    return manifests[data.manifest]


def truth_sources(runs: list[Run], cfg, manifests: dict[str, Manifest]) -> tuple[list, list[str]]:
    """Per run the node truth of its cohort (None without importance or truth), and why a run has none."""
    sources, problems, shared = [], [], {}
    for run in runs:
        source, problem = _truth_source(run, cfg, manifests, shared) if run.importance else (None, None)
        sources.append(source)
        problems += [problem] if problem else []
    return sources, problems


def _truth_source(run: Run, cfg, manifests: dict[str, Manifest], shared: dict):
    """``(NodeTruthSource, None)``, or ``(None, why not)``; runs of one cohort share one source."""
    if run.config is None:
        return None, f"{run.label}: no config.yaml, so no cohort and no planted truth"
    manifest = run.config.data.manifest
    path = find_truth(manifest, cfg.truth)
    if path is None:
        return None, (f"{run.label}: no planted ground truth ({Path(manifest).parent / TRUTH_FILE} not found; "
                      "truth=PATH names one)")
    key = (str(path), manifest)
    try:
        if key not in shared:
            shared[key] = recovery.NodeTruthSource(CohortTruth.load(path), _manifest(run, manifests),
                                                   cfg.planted_fraction)
    except Exception as error:  # noqa: BLE001 - an unreadable truth or manifest is a note
        return None, f"{run.label}: cannot read the truth {path} ({type(error).__name__}: {error})"
    return shared[key], None


def recovery_section(runs: list[Run], sources: list, problems: list[str], cfg) -> tuple[str, set[str]]:
    """Node-importance AUROC against the planted nodes per run and modality; the scored case ids."""
    output = Path(cfg.output)
    parts, notes = [], list(problems)
    for run, source in zip(runs, sources):
        if not run.importance:
            notes.append(f"{run.label}: no node importance, no AUROC")
        elif source is not None:
            parts.append(recovery.score_run(run, source))
    intro = (f"<p>Per test patient of every fold, the AUROC of the node importance against the planted nodes "
             f"(a node is planted when at least {cfg.planted_fraction:g} of its patches' area is planted pattern); "
             "mean ± sample sd over the patients scored, 0.5 = chance. A patient without planted nodes, with only "
             "planted nodes or without truth has no AUROC: counted, not scored.</p>")
    if not parts:
        return intro + "<p>No run has both node importance and planted ground truth.</p>" + html.notes(notes), set()
    patients = pd.concat(parts, ignore_index=True)
    summary = recovery.summarise(patients, cfg.decimals)
    atomic_write_csv(summary, output / "importance_auroc.csv", na_rep="N/A")
    atomic_write_csv(patients, output / "importance_auroc_patients.csv", na_rep="N/A")
    notes += [row.reason for row in patients.itertuples() if row.status == recovery.FAILED]
    shown = summary.rename(columns={
        "aggregator": "Aggregator", "modality": "Modality", "auroc_cell": "AUROC (mean ± sd)",
        "n_scored": "patients scored", "n_no_planted_node": "no planted node",
        "n_all_nodes_planted": "all nodes planted", "n_no_truth": "no truth", "n_failed": "failed"})
    table = html.simple_table(shown[["Aggregator", "Modality", "AUROC (mean ± sd)", "patients scored",
                                     "no planted node", "all nodes planted", "no truth", "failed"]])
    scored = set(patients.loc[patients["status"] == recovery.SCORED, "case_id"])
    return intro + table + html.notes(notes), scored


def overlay_section(runs: list[Run], slugs: list[str], figures: Path, cfg, manifests: dict[str, Manifest],
                    sources: list, scored: set[str]) -> str:
    """Importance overlays of the selected cases, per run and modality, beside the planted truth; failures as notes."""
    o = cfg.overlays
    cases = overlays.select_cases([run.importance for run in runs], o.n_cases, o.cases, scored)
    if not cases:
        return "<p>No run has node-importance files (the Mean aggregator has none).</p>"
    body, problems = "", []
    for case_id in cases:
        images = []
        for run, slug, source in zip(runs, slugs, sources):
            if not run.importance:
                continue
            if case_id not in run.importance:
                problems.append(f"{run.label}: no importance file for {case_id}")
                continue
            if run.config is None:
                problems.append(f"{run.label}: no config.yaml, so no graphs or images to paint {case_id} on")
                continue
            data = run.config.data
            try:
                importance = overlays.load_importance(run.importance[case_id])
            except Exception as error:  # noqa: BLE001 - a damaged file is reported like a missing one
                problems.append(f"{run.label}: cannot read {run.importance[case_id]} ({type(error).__name__}: {error})")
                continue
            for modality, nodes in importance.items():
                try:
                    graph, case_images = overlays.case_images(data.graph_dir, data.features_dir, modality, case_id,
                                                              manifest=_manifest(run, manifests))
                    overlays.check_node_count(nodes, graph)
                    truth = (_patch_truth(source, case_id, modality, data, problems, run.label)
                             if len(case_images) == 1 else None)
                    for image in case_images:
                        part = "" if image.name is None else f"_{image.name}"
                        title = f"{case_id}: {run.label}, {modality}" + ("" if image.name is None else f", {image.name}")
                        path = overlays.DRAW[modality](image, nodes[image.nodes], o, title,
                                                       figures / f"importance_{slug}_{case_id}_{modality}{part}.png",
                                                       cfg.figures.dpi, truth=truth)
                        images.append(html.image(path, Path(cfg.output), cfg.embed_images, title))
                except Exception as error:  # noqa: BLE001 - one unreadable image must not stop the report
                    log.warning("overlay %s %s %s: %s", run.label, case_id, modality, error)
                    problems.append(f"{run.label}, {case_id}, {modality}: not drawn ({type(error).__name__}: {error})")
        if images:
            body += f"<h3>{html.escape(case_id)}</h3>" + "".join(images)
    intro = ("<p>Each patch is coloured by the importance of the graph node it belongs to "
             "(colour scale per image: the case's own range). Where the cohort has planted ground truth, "
             f"the pattern is outlined in {html.escape(o.truth_colour)} and the panel beside it colours each patch "
             "by its node's planted fraction (0–1): what the AUROC above scores against.</p>")
    return intro + body + html.notes(problems)


def _patch_truth(source, case_id: str, modality: str, data, problems: list[str], label: str):
    """The truth to draw beside the importance, or None (without truth; a failure is noted)."""
    if source is None:
        return None
    try:
        return source.patch_truth(case_id, modality, data.graph_dir, data.features_dir)
    except Exception as error:  # noqa: BLE001 - the importance is still drawn, the note says why not the truth
        problems.append(f"{label}, {case_id}, {modality}: planted truth not shown ({type(error).__name__}: {error})")
        return None


def _format_value(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _format_params(params: dict) -> str:
    """``alpha=0.1, l1_ratio=0.5`` (pipeline prefixes dropped, floats to 4 significant digits)."""
    return ", ".join(f"{key.removeprefix('model__')}={_format_value(value)}" for key, value in params.items())


def survival_settings(run: Run) -> str:
    """τ, time grid and chosen hyperparameters per fold, the grids, and the stage's config."""
    settings = run.survival.settings if run.survival else None
    if settings is None:
        return "<p>No survival settings.json.</p>"
    folds, chosen, grids = [], [], {}
    for fold, info in settings["folds"].items():
        grid = info.get("time_grid")
        folds.append({
            "fold": fold,
            "train (events)": f"{info['n_train']} ({info['events_train']})",
            "test (events)": f"{info['n_test']} ({info['events_test']})",
            "τ (C-IPCW)": f"{info['tau']:.4g}",
            "time grid (C/D AUC, IBS)": "none" if grid is None
            else f"{len(grid)} times, {grid[0]:.4g} – {grid[-1]:.4g}",
        })
        row = {"fold": fold}
        for model, fitted in info["models"].items():
            row[model] = fitted.get("error") or _format_params(fitted["chosen"])
            grids.setdefault(model, _format_params(fitted["grid"]) if "grid" in fitted else "")
        chosen.append(row)
    grid_table = pd.DataFrame({"model": list(grids), "grid searched by inner CV": list(grids.values())})
    config = OmegaConf.to_yaml(OmegaConf.create(settings["config"]))
    return (
        f"<p>Tuning score: {html.escape(settings.get('tuning_score'))}; τ = quantile "
        f"{html.escape(settings.get('tau_quantile'))} of each fold's training times.</p>"
        + html.simple_table(pd.DataFrame(folds))
        + "<h4>Chosen hyperparameters</h4>" + html.simple_table(pd.DataFrame(chosen))
        + html.simple_table(grid_table)
        + f"<details><summary>survival config</summary><pre>{html.escape(config)}</pre></details>"
    )


def settings_section(runs: list[Run]) -> str:
    """Per run: the training config and the survival stage's settings."""
    body = ""
    for run in runs:
        training = (f"<details><summary>training config ({html.escape(run.path / 'config.yaml')})</summary>"
                    f"<pre>{html.escape(OmegaConf.to_yaml(run.config))}</pre></details>") if run.config else (
            "<p>No training config.</p>")
        body += f"<h3>{html.escape(run.label)}</h3>{training}<h4>Survival</h4>{survival_settings(run)}"
    return body


def checklist_section(runs: list[Run]) -> str:
    """The DLRRC items the runs' records (run_record.json) answer, and what remains for the author."""
    records = [record for run in runs for record in checklist.load_records(run.path)]
    if not records:
        return "<p>No run records (run_record.json) in these runs: rerun their stages to record them.</p>"
    parts = checklist.evaluate(records)
    body = "<p>" + html.escape(", ".join(f"{n} {s}" for s, n in checklist.counts(parts).items())) + (
        " (python -m radiopath.checklist RUN): <i>recorded</i> from the run records, <i>partly</i> recorded with "
        "more for the author to add, <i>missing</i> from the records, <i>author</i> only the author can answer.</p>")
    for part in parts:
        rows = [{"item": i["id"], "status": i["status"], "checklist": i["text"], "recorded": i["evidence"] or "",
                 "for the author": "" if i["status"] == "recorded" else i["author"] or ""} for i in part["items"]]
        body += f"<h3>{html.escape(part['name'])}</h3>" + html.simple_table(pd.DataFrame(rows))
    return body


def build_report(cfg) -> Path:
    """Write the report of ``cfg.run_dirs`` to ``cfg.output``; returns the HTML path."""
    output = Path(cfg.output)
    figures = output / "figures"
    aggregators = OmegaConf.to_container(cfg.aggregators)
    runs = [load_run(path, cfg.survival_subdir, aggregators) for path in cfg.run_dirs]
    distinct_labels(runs)
    slugs = [_slug(i, run) for i, run in enumerate(runs)]

    metrics = OmegaConf.to_container(cfg.metrics)
    table = comparison_table(runs, metrics, cfg.decimals)
    if not table.empty:
        atomic_write_csv(to_csv_frame(table, metrics), output / "table.csv")
        atomic_write_text(to_markdown(table, metrics), output / "table.md")

    if cfg.truth is not None and not Path(cfg.truth).is_file():
        raise FileNotFoundError(f"truth={cfg.truth}: no such truth.csv")
    manifests: dict[str, Manifest] = {}
    sources, truth_problems = truth_sources(runs, cfg, manifests)
    planted, scored = recovery_section(runs, sources, truth_problems, cfg)

    sections = [
        ("runs", "Runs", runs_section(runs)),
        ("comparison", "Comparison (Table 1)", table_section(runs, table, cfg)),
        ("metrics", "Metrics per fold (Figures 2–3)", metric_section(runs, figures, cfg)),
        ("risk-groups", "Risk groups (Figure 4)", km_section(runs, slugs, figures, cfg)),
        ("training", "Training curves", training_section(runs, slugs, figures, cfg)),
        ("planted", "Planted regions (node-importance AUROC)", planted),
        ("importance", "Node importance", overlay_section(runs, slugs, figures, cfg, manifests, sources, scored)),
        ("settings", "Settings", settings_section(runs)),
        ("reproducibility", "Reproducibility checklist", checklist_section(runs)),
    ]
    path = output / "report.html"
    atomic_write_text(html.page(cfg.title, sections), path)
    return path


def run(cfg) -> StageResult:
    """Write the report of ``cfg.run_dirs``; the training runs' records are its inputs."""
    for run_dir in cfg.run_dirs:
        active().input(RunFolder(run_dir).root / RECORD_NAME, "training run record")
    path = build_report(cfg)
    return StageResult(path, "report")
