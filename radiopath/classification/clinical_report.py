"""The clinical-evaluation sections of the classification report: confusion matrices, external centres,
subgroups, readers, prognosis and nested-CV tuning (N/A where a value cannot be computed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from radiopath.classification.clinical import ClinicalResults
from radiopath.classification.prognosis import ENDPOINT_TITLES
from radiopath.report import html

Section = tuple[str, str, str]  # (anchor, title, HTML body)


def _text(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "N/A" if not np.isfinite(value) else f"{value:.3g}"
    return "" if value is None or (isinstance(value, str) and value == "") else str(value)


def table_html(frame: pd.DataFrame) -> str:
    """A table with numbers to 3 significant digits and N/A for what could not be computed."""
    return html.simple_table(frame.apply(lambda column: column.map(_text)))


def _with_ci(frame: pd.DataFrame, value: str, low: str = "ci_low", high: str = "ci_high") -> pd.Series:
    return pd.Series([f"{_text(v)} [{_text(lo)}, {_text(hi)}]" if np.isfinite(v) and np.isfinite(lo) else _text(v)
                      for v, lo, hi in zip(frame[value], frame[low], frame[high])], index=frame.index)


def _metrics_wide(table: pd.DataFrame) -> pd.DataFrame:
    cells = table.assign(cell=_with_ci(table, "value"))
    return cells.pivot(index="pipeline", columns="metric", values="cell").reset_index()[
        ["pipeline", *dict.fromkeys(table["metric"])]]


def _prognosis_sections(results: ClinicalResults, report_dir: Path, embed: bool) -> list[Section]:
    note = f"<p>{html.escape(results.notes.get('prognosis', ''))}</p>"
    tables = results.prognosis
    if tables is None:
        return [("prognosis", "Prognosis", note)]
    hazard = tables.hazard_ratios.assign(hr=_with_ci(tables.hazard_ratios, "hr"))
    hazard = hazard[["set", "endpoint", "pipeline", "variable", "threshold", "n", "events", "n_positive",
                     "events_positive", "hr", "p_value", "logrank_p", "reason"]].rename(columns={"hr": "HR [CI]"})
    multi = tables.multivariable.assign(hr=_with_ci(tables.multivariable, "hr"))
    multi = multi[["set", "endpoint", "pipeline", "model", "variable", "hr", "p_value", "n", "events",
                   "adjusted_for", "reason"]].rename(columns={"hr": "HR [CI]"})
    c_index = tables.c_index.assign(c_index=_with_ci(tables.c_index, "c_index"))
    c_index = c_index[["set", "endpoint", "marker", "n", "events", "c_index", "reason"]]
    rates = tables.rates.assign(rate=_with_ci(tables.rates, "rate"))
    rates = rates[["set", "endpoint", "pipeline", "group", "n", "events", "rate", "reason"]]
    by_subgroup = tables.subgroup_hazard_ratios
    if len(by_subgroup):
        by_subgroup = by_subgroup.assign(hr=_with_ci(by_subgroup, "hr"))[
            ["set", "endpoint", "pipeline", "subgroup", "level", "n", "events", "hr", "p_value", "reason"]
        ].rename(columns={"hr": "HR per score point [CI]"})
    endpoints = ", ".join(f"{key}: {ENDPOINT_TITLES.get(key, key)}" for key in dict.fromkeys(hazard["endpoint"]))
    figures = '<div class="grid">' + "".join(html.image(path, report_dir, embed, caption)
                                             for path, caption in results.figures) + "</div>"
    return [
        ("prognosis", "Prognosis: predicted groups", note + f"<p>Endpoints {html.escape(endpoints)}. Univariate Cox "
         "(lifelines) of predicted positive vs negative and of the score on a 0-10 scale (HR per 0.1 of "
         "probability); log-rank p between the groups.</p>" + table_html(hazard)),
        ("cox", "Multivariable Cox", table_html(multi)),
        ("c-index", "C-index of the scores and clinical markers", table_html(c_index)
         + "<p>Harrell's C (higher score = shorter survival), percentile bootstrap CI.</p>"),
        ("subgroup-cox", "Score hazard ratios by subgroup", table_html(by_subgroup) if len(by_subgroup)
         else "<p>No subgroup column in the manifest.</p>"),
        ("rates", "Survival rates at the horizon (Kaplan-Meier)", table_html(rates) + figures),
    ]


def clinical_sections(results: ClinicalResults, tuning: pd.DataFrame | None, report_dir: Path,
                      embed: bool) -> list[Section]:
    """The report sections of the clinical evaluation, in reading order."""
    sections: list[Section] = [("confusion", "Confusion matrices", table_html(results.confusion)
                                + "<p>At each pipeline's mean validation-fold Youden threshold.</p>")]
    if results.external:
        body = "".join(f"<h3>{html.escape(centre)}</h3>" + table_html(_metrics_wide(table))
                       for centre, table in results.external.items())
        sections.append(("external", "External centres", body + "<p>Every case of each external centre, scored "
                         "by the models of the training centres; bootstrap CIs over its patients.</p>"))
    for key, title, frame in (("subgroups", "Subgroups", results.subgroups), ("readers", "Readers vs model",
                                                                               results.readers)):
        body = table_html(frame) if frame is not None else f"<p>{html.escape(results.notes.get(key, ''))}</p>"
        sections.append((key, title, body))
    sections += _prognosis_sections(results, report_dir, embed)
    if tuning is not None:
        sections.append(("nested", "Nested CV: chosen hyperparameters", table_html(tuning[tuning["chosen"]])
                         + "<p>Per outer training part: the grid point with the best mean inner-fold ROC AUC.</p>"))
    return sections
