"""Prognostic value of the classification scores (CT multi-phase paper: Fig. 4, Table S9), with lifelines.

For each scored set (the held-out test part, each external centre), pipeline and survival
endpoint (``{endpoint}_time`` / ``{endpoint}_event`` manifest columns: DSS, RFS, OS), the
patients (malignant tumours only, as in the paper, unless configured otherwise) are split
into *predicted positive* (``p >= threshold``; AI-predicted aggressive for the aggressiveness
task) and *predicted negative*. The threshold is the pipeline's mean validation-fold Youden
threshold, chosen on training cases only, so no test outcome shapes the groups.

- Kaplan-Meier curves per group (``KaplanMeierFitter``) and their survival rate at the
  horizon (5 years) with its CI; log-rank test between the groups (``lifelines.statistics``).
- Univariate Cox hazard ratios (``CoxPHFitter``) of the group and of the score on a 0-10
  scale (the paper's AI-aggressiveness score: HR per 0.1 of probability), with CIs.
- Multivariable Cox of the group, and separately of the score, adjusted for the configured
  covariates present (TNM stage, ISUP grade, age, sex).
- Harrell's C-index (``lifelines.utils.concordance_index``) of each score and of the
  clinical markers (TNM stage, ISUP grade), with bootstrap CIs.
- The Cox HR of the 0-10 score within each level of the subgroup columns (stage,
  histology, centre: the paper's forest plot, Fig. 4G).

Where an analysis cannot be computed (too few events, an empty group or a group without
events, a fit that fails) its values are NaN and ``reason`` says why.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.exceptions import ConvergenceError, ConvergenceWarning
from lifelines.statistics import logrank_test
from lifelines.utils import concordance_index

from radiopath.classification.subgroups import level_name

ENDPOINT_TITLES = {"dss": "disease-specific survival", "rfs": "recurrence-free survival", "os": "overall survival"}
POSITIVE, SCORE = "predicted_positive", "score_0_10"
DAYS_PER_YEAR = 365.25
NA = float("nan")


@dataclass
class PrognosisTables:
    """Every prognosis table, and the survival data behind the Kaplan-Meier figures."""

    hazard_ratios: pd.DataFrame
    multivariable: pd.DataFrame
    c_index: pd.DataFrame
    rates: pd.DataFrame
    subgroup_hazard_ratios: pd.DataFrame
    curves: dict[tuple[str, str, str], pd.DataFrame]  # (set, endpoint, pipeline) -> time, event, positive


def horizon_in_time_units(years: float, time_unit: str) -> float:
    """``years`` in the manifest's survival time unit (days or months)."""
    return years * (DAYS_PER_YEAR if time_unit == "days" else 12.0)


def available_endpoints(columns: Sequence[str], endpoints: Sequence[str]) -> list[str]:
    """The configured endpoints whose ``_time`` and ``_event`` columns the manifest has."""
    return [e for e in endpoints if f"{e}_time" in columns and f"{e}_event" in columns]


def _survival_data(rows: pd.DataFrame, endpoint: str) -> pd.DataFrame:
    data = pd.DataFrame({"time": pd.to_numeric(rows[f"{endpoint}_time"], errors="coerce"),
                         "event": pd.to_numeric(rows[f"{endpoint}_event"], errors="coerce"),
                         "p": rows["p"], "positive": (rows["p"] >= rows["threshold"]).astype(int)},
                        index=rows.index)
    return data.dropna(subset=["time", "event"])


def _cox(data: pd.DataFrame, variables: list[str], level: float) -> tuple[pd.DataFrame, str]:
    """Hazard ratio, CI and Wald p of each variable, and any convergence warning lifelines gave.

    A variable whose CI is not finite (a (quasi-)separated design: the likelihood keeps rising as
    its coefficient grows) gets NaN, not the meaningless estimate, and the note says why.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitter = CoxPHFitter(alpha=1 - level).fit(data[["time", "event", *variables]], "time", "event")
    with np.errstate(over="ignore"):
        bounds = np.exp(fitter.confidence_intervals_.loc[variables].to_numpy())
    table = pd.DataFrame({"variable": variables, "hr": fitter.hazard_ratios_[variables].to_numpy(),
                          "ci_low": bounds[:, 0], "ci_high": bounds[:, 1],
                          "p_value": fitter.summary.loc[variables, "p"].to_numpy()})
    notes = {str(w.message).split("\n")[0].split(". ")[0] for w in caught if issubclass(w.category, ConvergenceWarning)}
    unbounded = ~(np.isfinite(bounds).all(axis=1) & (bounds[:, 0] > 0))
    if unbounded.any():
        table.loc[unbounded, ["hr", "ci_low", "ci_high", "p_value"]] = NA
        notes.add(f"no finite CI for {', '.join(table.loc[unbounded, 'variable'])}: (quasi-)separated groups")
    return table, "; ".join(sorted(notes))


def _too_few_events(data: pd.DataFrame, min_events: int) -> str:
    events = int(data["event"].sum())
    return f"{events} events (fewer than min_events = {min_events})" if events < min_events else ""


def _group_problem(data: pd.DataFrame) -> str:
    for value, name in ((1, "predicted-positive"), (0, "predicted-negative")):
        group = data[data["positive"] == value]
        if group.empty:
            return f"no {name} patient"
        if group["event"].sum() == 0:
            return f"no event among {name} patients: the hazard ratio is not finite"
    return ""


def hazard_ratio_rows(data: pd.DataFrame, min_events: int, level: float) -> list[dict]:
    """Univariate Cox HRs of the group and of the 0-10 score, with the groups' log-rank p."""
    counts = {"n": len(data), "events": int(data["event"].sum()), "n_positive": int(data["positive"].sum()),
              "events_positive": int(data.loc[data["positive"] == 1, "event"].sum())}
    logrank = NA
    if 0 < counts["n_positive"] < len(data) and counts["events"]:
        positive = data["positive"] == 1
        logrank = float(logrank_test(data.loc[positive, "time"], data.loc[~positive, "time"],
                                     data.loc[positive, "event"], data.loc[~positive, "event"]).p_value)
    rows = []
    for variable in (POSITIVE, SCORE):
        reason = _too_few_events(data, min_events) or (_group_problem(data) if variable == POSITIVE else "")
        row = {**counts, "variable": variable, "hr": NA, "ci_low": NA, "ci_high": NA, "p_value": NA,
               "logrank_p": logrank if variable == POSITIVE else NA, "reason": reason}
        if not reason:
            design = data.assign(**{POSITIVE: data["positive"], SCORE: 10 * data["p"]})
            try:
                table, note = _cox(design, [variable], level)
                row.update(table.iloc[0].drop("variable").to_dict(), reason=note)
            except (ConvergenceError, np.linalg.LinAlgError) as error:
                row["reason"] = f"Cox fit failed: {error}"
        rows.append(row)
    return rows


def subgroup_hazard_rows(data: pd.DataFrame, rows: pd.DataFrame, columns: Sequence[str], min_events: int,
                         level: float) -> list[dict]:
    """Univariate Cox HR of the 0-10 score within each level of each subgroup column present."""
    out = []
    for column in (c for c in columns if c in rows):
        levels = rows.loc[data.index, column].map(level_name)
        for value in sorted(levels.unique()):
            part = data[levels == value]
            row = {"subgroup": column, "level": value, "n": len(part), "events": int(part["event"].sum()),
                   "hr": NA, "ci_low": NA, "ci_high": NA, "p_value": NA,
                   "reason": _too_few_events(part, min_events) or ("one score value only"
                                                                  if part["p"].nunique() < 2 else "")}
            if not row["reason"]:
                try:
                    table, note = _cox(part.assign(**{SCORE: 10 * part["p"]}), [SCORE], level)
                    row.update(table.iloc[0].drop("variable").to_dict(), reason=note)
                except (ConvergenceError, np.linalg.LinAlgError) as error:
                    row["reason"] = f"Cox fit failed: {error}"
            out.append(row)
    return out


def _covariate_design(rows: pd.DataFrame, covariates: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """Numeric covariates as they are, text ones as indicators; those with one value only are left out."""
    columns, used = [], []
    for name in covariates:
        if name not in rows:
            continue
        values = rows[name]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().sum() == values.notna().sum():
            frame = numeric.to_frame(name)
        else:
            frame = pd.get_dummies(values.astype("string"), prefix=name, drop_first=True, dtype=float)
            frame[values.isna()] = np.nan
        frame = frame.loc[:, frame.nunique(dropna=True) > 1]
        if frame.shape[1]:
            columns.append(frame)
            used.append(name)
    return (pd.concat(columns, axis=1) if columns else pd.DataFrame(index=rows.index)), used


def multivariable_rows(data: pd.DataFrame, rows: pd.DataFrame, covariates: Sequence[str], min_events: int,
                       min_events_per_variable: float, level: float) -> list[dict]:
    """Cox of the group (model ``group``) and of the score (model ``score``), each adjusted for the covariates."""
    design, used = _covariate_design(rows.loc[data.index], covariates)
    complete = pd.concat([data, design], axis=1).dropna()
    out = []
    for model, variable in (("group", POSITIVE), ("score", SCORE)):
        base = {"model": model, "n": len(complete), "events": int(complete["event"].sum()),
                "adjusted_for": ", ".join(used)}
        n_variables = 1 + design.shape[1]
        reason = (_too_few_events(complete, min_events)
                  or (_group_problem(complete) if variable == POSITIVE else "")
                  or ("" if used else "no covariate with two or more values")
                  or (f"{base['events']} events for {n_variables} variables (fewer than min_events_per_variable "
                      f"= {min_events_per_variable:g} each)"
                      if base["events"] < min_events_per_variable * n_variables else ""))
        if not reason:
            frame = complete.assign(**{POSITIVE: complete["positive"], SCORE: 10 * complete["p"]})
            try:
                table, note = _cox(frame, [variable, *design.columns], level)
                out += [{**base, **row, "reason": note} for row in table.to_dict("records")]
                continue
            except (ConvergenceError, np.linalg.LinAlgError) as error:
                reason = f"Cox fit failed: {error}"
        out.append({**base, "variable": variable, "hr": NA, "ci_low": NA, "ci_high": NA, "p_value": NA,
                    "reason": reason})
    return out


def rate_rows(data: pd.DataFrame, horizon: float, level: float) -> list[dict]:
    """Kaplan-Meier survival of each group at ``horizon``, with its CI; N/A where follow-up ends earlier."""
    rows = []
    for value, group in ((1, "predicted_positive"), (0, "predicted_negative")):
        part = data[data["positive"] == value]
        row = {"group": group, "n": len(part), "events": int(part["event"].sum()), "rate": NA, "ci_low": NA,
               "ci_high": NA, "reason": ""}
        if part.empty:
            row["reason"] = "no patient"
        else:
            km = KaplanMeierFitter(alpha=1 - level).fit(part["time"], part["event"])
            rate = float(km.survival_function_at_times(horizon).iloc[0])
            if (part["time"] < horizon).all() and rate > 0:
                row["reason"] = "follow-up ends before the horizon"
            else:
                bounds = km.confidence_interval_survival_function_.loc[:horizon].iloc[-1]
                row.update(rate=rate, ci_low=float(bounds.iloc[0]), ci_high=float(bounds.iloc[1]))
        rows.append(row)
    return rows


def c_index_row(time: np.ndarray, event: np.ndarray, risk: np.ndarray, n_boot: int, seed: int,
                level: float, min_events: int) -> dict:
    """Harrell's C of ``risk`` (higher = shorter survival) with a percentile bootstrap CI."""
    keep = np.isfinite(risk)
    time, event, risk = time[keep], event[keep], risk[keep]
    row = {"n": len(time), "events": int(event.sum()), "c_index": NA, "ci_low": NA, "ci_high": NA, "reason": ""}
    row["reason"] = _too_few_events(pd.DataFrame({"event": event}), min_events)
    if row["reason"]:
        return row
    if len(np.unique(risk)) < 2:
        row["reason"] = "one value only"
        return row
    row["c_index"] = float(concordance_index(time, -risk, event))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        index = rng.integers(0, len(time), len(time))
        if event[index].sum() == 0:
            continue
        try:
            values.append(concordance_index(time[index], -risk[index], event[index]))
        except ZeroDivisionError:  # no comparable pair in this resample
            continue
    if values:
        tail = 50 * (1 - level)
        row["ci_low"], row["ci_high"] = (float(v) for v in np.percentile(values, [tail, 100 - tail]))
    return row


def prognosis_tables(*, scored: pd.DataFrame, endpoints: Sequence[str], covariates: Sequence[str],
                     markers: Sequence[str], subgroups: Sequence[str], malignant_only: bool, horizon: float,
                     min_events: int, min_events_per_variable: float, n_boot: int, seed: int,
                     level: float) -> PrognosisTables:
    """All prognosis tables of ``scored`` (one row per set, pipeline and case: ``p``, ``threshold``, case columns)."""
    if malignant_only and "malignant" in scored:
        scored = scored[pd.to_numeric(scored["malignant"], errors="coerce") == 1]
    hazard, multivariable, c_index, rates, by_subgroup, curves = [], [], [], [], [], {}
    for set_name, in_set in scored.groupby("set", sort=False):
        for endpoint in endpoints:
            for pipeline, rows in in_set.groupby("pipeline", sort=False):
                data = _survival_data(rows, endpoint)
                key = {"set": set_name, "endpoint": endpoint, "pipeline": pipeline}
                threshold = float(rows["threshold"].iloc[0])
                curves[(set_name, endpoint, pipeline)] = data[["time", "event", "positive"]]
                hazard += [{**key, "threshold": threshold, **row} for row in hazard_ratio_rows(data, min_events, level)]
                multivariable += [{**key, **row}
                                  for row in multivariable_rows(data, rows, covariates, min_events,
                                                                min_events_per_variable, level)]
                rates += [{**key, "threshold": threshold, "horizon": horizon, **row}
                          for row in rate_rows(data, horizon, level)]
                by_subgroup += [{**key, **row} for row in subgroup_hazard_rows(data, rows, subgroups, min_events, level)]
                c_index.append({"set": set_name, "endpoint": endpoint, "marker": pipeline, **c_index_row(
                    data["time"].to_numpy(), data["event"].to_numpy(), data["p"].to_numpy(), n_boot, seed, level,
                    min_events)})
            first = in_set[in_set["pipeline"] == in_set["pipeline"].iloc[0]]
            data = _survival_data(first, endpoint)
            for marker in (m for m in markers if m in first):
                risk = pd.to_numeric(first.loc[data.index, marker], errors="coerce").to_numpy(dtype=float)
                c_index.append({"set": set_name, "endpoint": endpoint, "marker": marker, **c_index_row(
                    data["time"].to_numpy(), data["event"].to_numpy(), risk, n_boot, seed, level, min_events)})
    return PrognosisTables(pd.DataFrame(hazard), pd.DataFrame(multivariable), pd.DataFrame(c_index),
                           pd.DataFrame(rates), pd.DataFrame(by_subgroup), curves)
