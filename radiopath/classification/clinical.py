"""The clinical evaluation of the scores of the cases no model was fitted on (the held-out test part
and each external centre): confusion matrices, per-centre metrics, subgroups, readers and prognosis,
each written under the output folder when its inputs exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from radiopath.classification.prognosis import (
    ENDPOINT_TITLES, PrognosisTables, available_endpoints, horizon_in_time_units, prognosis_tables)
from radiopath.classification.readers import reader_columns, reader_table
from radiopath.classification.results import confusion_tables, external_metrics_tables, scored_sets
from radiopath.classification.run import Evaluation
from radiopath.classification.subgroups import subgroup_table
from radiopath.classification.survival_plots import plot_forest, plot_km, plot_subgroup_forest
from radiopath.io import atomic_write_csv


@dataclass
class ClinicalResults:
    """The tables and figures of the clinical evaluation; ``None`` where the inputs do not exist, with the reason."""

    confusion: pd.DataFrame
    external: dict[str, pd.DataFrame] = field(default_factory=dict)
    subgroups: pd.DataFrame | None = None
    readers: pd.DataFrame | None = None
    prognosis: PrognosisTables | None = None
    notes: dict[str, str] = field(default_factory=dict)  # section -> why it is missing, or what it covers
    figures: list[tuple[Path, str]] = field(default_factory=list)  # prognosis figures and captions


def _prognosis(cfg: DictConfig, scored: pd.DataFrame, out: Path, results: ClinicalResults) -> None:
    settings, ev = cfg.evaluation.prognosis, cfg.evaluation
    if not cfg.task.prognosis:
        results.notes["prognosis"] = f"not run for the {cfg.task.name} task (task.prognosis = false)"
        return
    endpoints = available_endpoints(list(scored.columns), list(settings.endpoints))
    if not endpoints:
        results.notes["prognosis"] = ("the manifest has none of the survival endpoints "
                                      + ", ".join(f"{e}_time/{e}_event" for e in settings.endpoints))
        return
    horizon = horizon_in_time_units(settings.horizon_years, cfg.data.time_unit)
    tables = prognosis_tables(scored=scored, endpoints=endpoints, covariates=list(settings.covariates),
                              markers=list(settings.markers), subgroups=list(ev.subgroups),
                              malignant_only=settings.malignant_only,
                              horizon=horizon, min_events=settings.min_events,
                              min_events_per_variable=settings.min_events_per_variable, n_boot=settings.n_boot,
                              seed=ev.seed, level=ev.level)
    folder = out / "prognosis"
    atomic_write_csv(tables.hazard_ratios, folder / "hazard_ratios.csv")
    atomic_write_csv(tables.multivariable, folder / "cox_multivariable.csv")
    atomic_write_csv(tables.c_index, folder / "c_index.csv")
    atomic_write_csv(tables.rates, folder / "survival_rates.csv")
    atomic_write_csv(tables.subgroup_hazard_ratios, folder / "subgroup_hazard_ratios.csv")
    for (set_name, endpoint) in dict.fromkeys((s, e) for s, e, _ in tables.curves):
        curves = {pipeline: data for (s, e, pipeline), data in tables.curves.items() if (s, e) == (set_name, endpoint)}
        hazard = tables.hazard_ratios[(tables.hazard_ratios["set"] == set_name)
                                      & (tables.hazard_ratios["endpoint"] == endpoint)]
        path = plot_km(curves, hazard, folder / f"km_{set_name}_{endpoint}.png",
                       f"{set_name}: {ENDPOINT_TITLES.get(endpoint, endpoint)}", cfg.data.time_unit, ev.level,
                       cfg.report.dpi)
        results.figures.append((path, f"Kaplan-Meier, {set_name} set, {ENDPOINT_TITLES.get(endpoint, endpoint)}"))
    results.figures.append((plot_forest(tables.hazard_ratios, tables.multivariable, folder / "forest.png",
                                        cfg.report.dpi), "Hazard ratios, predicted positive vs negative"))
    for set_name, table in (tables.subgroup_hazard_ratios.groupby("set", sort=False)
                            if len(tables.subgroup_hazard_ratios) else ()):
        path = plot_subgroup_forest(table, folder / f"forest_subgroups_{set_name}.png",
                                    f"{set_name}: score hazard ratio by subgroup", cfg.report.dpi)
        results.figures.append((path, f"Score hazard ratios by subgroup, {set_name} set"))
    results.prognosis = tables
    who = "malignant patients of " if settings.malignant_only and "malignant" in scored else "patients of "
    results.notes["prognosis"] = (
        f"{who}each set; groups split at each pipeline's mean validation-fold Youden threshold (training "
        f"cases only); survival rates at {settings.horizon_years:g} years ({horizon:g} {cfg.data.time_unit})")


def clinical_evaluation(*, cfg: DictConfig, cases: pd.DataFrame, evaluation: Evaluation, out: Path) -> ClinicalResults:
    """Every clinical analysis of ``evaluation``'s scored sets that the manifest's columns allow, written under ``out``."""
    ev = cfg.evaluation
    centre_column = ev.centre_column
    scored = scored_sets(evaluation.predictions, evaluation.thresholds, cases, centre_column)
    results = ClinicalResults(confusion=confusion_tables(scored))
    atomic_write_csv(results.confusion, out / "confusion.csv")
    if scored.empty:
        results.notes["clinical"] = "no pipeline finished"
        return results
    results.external = external_metrics_tables(scored, ev.n_boot, ev.seed, ev.level)
    for centre, table in results.external.items():
        atomic_write_csv(table, out / "external" / centre / "metrics.csv")

    subgroups = [c for c in ev.subgroups if c in scored]
    if subgroups:
        results.subgroups = subgroup_table(scored=scored, columns=subgroups)
        atomic_write_csv(results.subgroups, out / "subgroups.csv")
    else:
        results.notes["subgroups"] = f"the manifest has none of the columns {list(ev.subgroups)}"

    readers = reader_columns(list(cases.columns), cfg.task.reader_prefix)
    if readers:
        results.readers = reader_table(scored=scored, columns=readers)
        atomic_write_csv(results.readers, out / "readers.csv")
    else:
        results.notes["readers"] = (f"no reader columns ({cfg.task.reader_prefix}<name>) in the manifest"
                                    if cfg.task.reader_prefix else f"no readers for the {cfg.task.name} task")
    _prognosis(cfg, scored, out, results)
    return results
