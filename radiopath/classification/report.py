"""The classification report: one static HTML page built with the survival report's helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from radiopath.classification.clinical import ClinicalResults
from radiopath.classification.clinical_report import clinical_sections
from radiopath.report import html

METRIC_TITLES = {
    "roc_auc": "ROC AUC", "pr_auc": "PR AUC", "accuracy": "Accuracy", "f1": "F1",
    "sensitivity": "Sensitivity", "specificity": "Specificity", "precision": "Precision", "brier": "Brier",
}


def _cell(value: float, low: float, high: float) -> str:
    if not np.isfinite(value):
        return "N/A"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if np.isfinite(low) else f"{value:.3f}"


def metrics_html(metrics: pd.DataFrame) -> str:
    """Test metrics with CIs, one row per pipeline, then the CV threshold and AUCs."""
    test = metrics[metrics["split"] == "test"]
    rows = []
    for pipeline, part in test.groupby("pipeline", sort=False):
        part = part.set_index("metric")
        cv = metrics[(metrics["pipeline"] == pipeline) & (metrics["split"] == "cv")].set_index("metric")["value"]
        row = {"pipeline": pipeline}
        row.update({title: _cell(*part.loc[key, ["value", "ci_low", "ci_high"]]) for key, title in METRIC_TITLES.items()})
        row["threshold (CV Youden)"] = f"{cv['youden_threshold']:.3f}"
        row["CV AUC (mean ± std)"] = f"{cv['roc_auc_mean']:.3f} ± {cv['roc_auc_std']:.3f}"
        rows.append(row)
    return html.simple_table(pd.DataFrame(rows))


def delong_html(delong: pd.DataFrame, order: list[str]) -> str:
    """Matrix: row a, column b holds AUC(a) - AUC(b) [CI] and DeLong's p."""
    if delong.empty:
        return "<p>One pipeline only: no pairwise comparison.</p>"
    pairs = delong.set_index(["pipeline_a", "pipeline_b"])
    rows = []
    for a in order:
        row = {"": a}
        for b in order:
            if a == b:
                row[b] = "—"
            else:
                r = pairs.loc[(a, b)]
                row[b] = f"{r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], p = {r['p_value']:.3g}"
        rows.append(row)
    return html.simple_table(pd.DataFrame(rows))


def render_classification_report(
    path: Path, title: str, task_summary: str, metrics: pd.DataFrame, delong: pd.DataFrame,
    figures: list[tuple[Path, str]], excluded: pd.DataFrame, failures: list[tuple[str, str]], settings: str,
    embed_images: bool, *, clinical: ClinicalResults, tuning: pd.DataFrame | None,
) -> str:
    """The classification report's HTML text; the caller writes it to ``path`` (images are relative to its folder).

    ``clinical`` adds its sections after the figures; ``tuning`` (nested CV) the chosen hyperparameters.
    """
    order = list(dict.fromkeys(metrics["pipeline"]))
    problems = [f"{pipeline} failed: {error}" for pipeline, error in failures]
    sections = [
        ("cohort", "Cohort", f"<p>{html.escape(task_summary)}</p>" + html.notes(problems)
         + (html.simple_table(excluded) if len(excluded) else "")),
        ("metrics", "Test metrics", metrics_html(metrics) + (
            "<p>Held-out test split; 95% percentile bootstrap CIs over test patients. Thresholded metrics use the "
            "mean of the validation folds' Youden thresholds. PR AUC is the average precision.</p>")
         if order else "<p>No pipeline finished.</p>"),
        ("delong", "DeLong's test", delong_html(delong, order)),
        ("figures", "ROC and calibration", '<div class="grid">' + "".join(
            html.image(figure, path.parent, embed_images, caption) for figure, caption in figures) + "</div>"),
        *clinical_sections(clinical, tuning, path.parent, embed_images),
        ("settings", "Settings", f"<pre>{html.escape(settings)}</pre>"),
    ]
    return html.page(title, sections)
