"""Prognostic value of the scores: lifelines' Cox, log-rank, Kaplan-Meier and C-index, N/A with reasons."""

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test
from lifelines.utils import concordance_index

from radiopath.classification.prognosis import (
    POSITIVE, SCORE, available_endpoints, c_index_row, hazard_ratio_rows, horizon_in_time_units, multivariable_rows,
    prognosis_tables, rate_rows)


def scored_rows(n=160, seed=0, threshold=0.5) -> pd.DataFrame:
    """One pipeline's scored cases: a score that raises the hazard, stage, grade, age, sex, malignancy."""
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    stage = rng.integers(1, 5, n)
    hazard = np.exp(1.5 * (p > threshold) + 0.3 * (stage - 2))
    event_time = 800 * rng.exponential(size=n) / hazard
    censor = rng.uniform(300, 3000, n)
    return pd.DataFrame({
        "set": "test", "pipeline": "model", "case_id": [f"c{i}" for i in range(n)], "y": (p > 0.5).astype(int),
        "p": p, "threshold": threshold, "os_time": np.minimum(event_time, censor).round(1) + 1,
        "os_event": (event_time <= censor).astype(int), "tnm_stage": stage, "isup_grade": rng.integers(1, 5, n),
        "age": rng.normal(60, 10, n).round(), "sex": rng.choice(["M", "F"], n), "malignant": 1,
    })


def survival_frame(rows: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"time": rows["os_time"], "event": rows["os_event"], "p": rows["p"],
                         "positive": (rows["p"] >= rows["threshold"]).astype(int)})


def test_hazard_ratios_and_log_rank_are_lifelines_fits_of_the_predicted_groups():
    rows = scored_rows()
    data = survival_frame(rows)
    table = pd.DataFrame(hazard_ratio_rows(data, min_events=5, level=0.95)).set_index("variable")
    direct = CoxPHFitter().fit(data[["time", "event", "positive"]], "time", "event")
    assert table.loc[POSITIVE, "hr"] == pytest.approx(direct.hazard_ratios_["positive"])
    low, high = np.exp(direct.confidence_intervals_.loc["positive"])
    assert (table.loc[POSITIVE, "ci_low"], table.loc[POSITIVE, "ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert table.loc[POSITIVE, "hr"] > 2 and table.loc[POSITIVE, "p_value"] < 0.01  # the planted effect
    positive = data["positive"] == 1
    logrank = logrank_test(data.loc[positive, "time"], data.loc[~positive, "time"],
                           data.loc[positive, "event"], data.loc[~positive, "event"])
    assert table.loc[POSITIVE, "logrank_p"] == pytest.approx(logrank.p_value)
    score = CoxPHFitter().fit(data.assign(s=10 * data["p"])[["time", "event", "s"]], "time", "event")
    assert table.loc[SCORE, "hr"] == pytest.approx(score.hazard_ratios_["s"])  # per 0.1 of probability
    assert table["reason"].eq("").all()


def test_too_few_events_or_a_group_without_events_gives_na_with_the_reason():
    data = survival_frame(scored_rows(n=40))
    few = data.assign(event=0)
    few.iloc[:3, few.columns.get_loc("event")] = 1
    rows = pd.DataFrame(hazard_ratio_rows(few, min_events=5, level=0.95))
    assert rows["hr"].isna().all() and rows["reason"].str.contains("3 events").all()
    silent = data.assign(event=np.where(data["positive"] == 1, 0, data["event"]))
    group = pd.DataFrame(hazard_ratio_rows(silent, min_events=5, level=0.95)).set_index("variable")
    assert np.isnan(group.loc[POSITIVE, "hr"]) and "no event among predicted-positive" in group.loc[POSITIVE, "reason"]
    assert np.isfinite(group.loc[SCORE, "hr"])  # the continuous score still has a finite HR


def test_separated_groups_give_na_instead_of_an_unbounded_hazard_ratio():
    # Every predicted-positive patient dies before the one predicted-negative death: the fit has no finite HR.
    data = pd.DataFrame({"time": [*range(1, 11), 50, *[100] * 9], "event": [1] * 11 + [0] * 9,
                         "p": [0.9] * 10 + [0.1] * 10, "positive": [1] * 10 + [0] * 10})
    rows = pd.DataFrame(hazard_ratio_rows(data, min_events=5, level=0.95)).set_index("variable")
    assert np.isnan(rows.loc[POSITIVE, "hr"]) and "no finite CI for predicted_positive" in rows.loc[POSITIVE, "reason"]
    assert rows.loc[POSITIVE, "logrank_p"] < 0.05  # the log-rank test still compares the curves


def test_multivariable_cox_adjusts_for_the_covariates_present_with_indicators_for_text():
    rows = scored_rows()
    data = survival_frame(rows)
    table = pd.DataFrame(multivariable_rows(data, rows.assign(isup_grade=2), ["tnm_stage", "isup_grade", "sex", "bmi"],
                                            min_events=5, min_events_per_variable=2, level=0.95))
    group = table[table["model"] == "group"].set_index("variable")
    assert list(group.index) == [POSITIVE, "tnm_stage", "sex_M"]  # one-value grade and absent bmi left out
    assert group["adjusted_for"].iloc[0] == "tnm_stage, sex"
    design = data.assign(tnm_stage=rows["tnm_stage"], sex_M=(rows["sex"] == "M").astype(float))
    direct = CoxPHFitter().fit(design[["time", "event", "positive", "tnm_stage", "sex_M"]], "time", "event")
    assert group.loc[POSITIVE, "hr"] == pytest.approx(direct.hazard_ratios_["positive"])
    assert group.loc["tnm_stage", "hr"] == pytest.approx(direct.hazard_ratios_["tnm_stage"])
    assert set(table.loc[table["model"] == "score", "variable"]) == {SCORE, "tnm_stage", "sex_M"}
    few = pd.DataFrame(multivariable_rows(data, rows, ["tnm_stage", "sex"], min_events=5,
                                          min_events_per_variable=data["event"].sum(), level=0.95))
    assert few["hr"].isna().all() and few["reason"].str.contains("events for 3 variables").all()


def test_survival_rates_are_kaplan_meier_at_the_horizon_or_na_before_follow_up_reaches_it():
    data = survival_frame(scored_rows())
    horizon = horizon_in_time_units(2, "days")
    assert horizon == pytest.approx(730.5) and horizon_in_time_units(5, "months") == 60
    table = pd.DataFrame(rate_rows(data, horizon, level=0.95)).set_index("group")
    negative = data[data["positive"] == 0]
    km = KaplanMeierFitter().fit(negative["time"], negative["event"])
    assert table.loc["predicted_negative", "rate"] == pytest.approx(km.survival_function_at_times(horizon).iloc[0])
    assert table.loc["predicted_negative", "ci_low"] < table.loc["predicted_negative", "rate"]
    assert table.loc["predicted_positive", "rate"] < table.loc["predicted_negative", "rate"]
    short = pd.DataFrame(rate_rows(data.assign(time=np.minimum(data["time"], 500), event=0), horizon, 0.95))
    assert short["rate"].isna().all() and short["reason"].eq("follow-up ends before the horizon").all()


def test_c_index_is_harrells_with_a_bootstrap_interval():
    data = survival_frame(scored_rows())
    row = c_index_row(data["time"].to_numpy(), data["event"].to_numpy(), data["p"].to_numpy(), 100, 0, 0.95, 5)
    assert row["c_index"] == pytest.approx(concordance_index(data["time"], -data["p"], data["event"]))
    assert 0.5 < row["c_index"] and row["ci_low"] < row["c_index"] < row["ci_high"]
    few = c_index_row(data["time"].to_numpy()[:10], np.zeros(10), data["p"].to_numpy()[:10], 100, 0, 0.95, 5)
    assert np.isnan(few["c_index"]) and few["reason"] == "0 events (fewer than min_events = 5)"


def test_prognosis_tables_keep_malignant_patients_and_skip_absent_endpoints():
    rows = scored_rows()
    rows.loc[:19, "malignant"] = 0
    assert available_endpoints(list(rows.columns), ["dss", "os"]) == ["os"]
    tables = prognosis_tables(scored=rows, endpoints=["os"], covariates=["tnm_stage"], markers=["tnm_stage", "grade"],
                              subgroups=["sex", "absent"], malignant_only=True, horizon=730.5, min_events=5, min_events_per_variable=2, n_boot=50,
                              seed=0, level=0.95)
    assert set(tables.hazard_ratios["n"]) == {140}
    assert list(tables.c_index["marker"]) == ["model", "tnm_stage"]  # no grade column: no marker row
    assert set(tables.rates["group"]) == {"predicted_positive", "predicted_negative"}
    assert tables.hazard_ratios["threshold"].eq(0.5).all()
    assert list(tables.curves) == [("test", "os", "model")] and len(tables.curves[("test", "os", "model")]) == 140
    by_sex = tables.subgroup_hazard_ratios.set_index("level")
    assert list(by_sex.index) == ["F", "M"] and set(by_sex["subgroup"]) == {"sex"}
    women = rows[(rows["malignant"] == 1) & (rows["sex"] == "F")]
    direct = CoxPHFitter().fit(pd.DataFrame({"time": women["os_time"], "event": women["os_event"],
                                             "s": 10 * women["p"]}), "time", "event")
    assert by_sex.loc["F", "hr"] == pytest.approx(direct.hazard_ratios_["s"]) and by_sex.loc["F", "n"] == len(women)
