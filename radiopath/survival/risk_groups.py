"""Kaplan–Meier curves of low- and high-risk test patients, pooled over the folds.

Each fold's test patients are split at that fold's own threshold (mean or
median test risk), so only the group labels are pooled: risk scores of
different folds' models are never compared with each other.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from lifelines import KaplanMeierFitter  # noqa: E402
from lifelines.plotting import add_at_risk_counts  # noqa: E402
from lifelines.statistics import logrank_test  # noqa: E402

from radiopath.io import atomic_path  # noqa: E402
from radiopath.layout import SurvivalFolder  # noqa: E402

GROUPS = ("low risk", "high risk")


def assign_groups(predictions: pd.DataFrame, threshold: str) -> pd.DataFrame:
    """Add ``group``: high risk when risk exceeds its fold's ``mean`` or ``median`` test risk."""
    if threshold not in ("mean", "median"):
        raise ValueError(f"risk-group threshold must be mean or median, got {threshold!r}")
    cut = predictions.groupby(["model", "fold"])["risk"].transform(threshold)
    return predictions.assign(group=np.where(predictions["risk"] > cut, GROUPS[1], GROUPS[0]))


def logrank_row(model: str, grouped: pd.DataFrame) -> dict:
    """Group sizes, events and the log-rank test of one model's pooled groups."""
    row = {"model": model}
    for name in GROUPS:
        part = grouped[grouped["group"] == name]
        key = name.split()[0]
        row[f"n_{key}"], row[f"events_{key}"] = len(part), int(part["os_event"].sum())
    low, high = (grouped[grouped["group"] == name] for name in GROUPS)
    if len(low) == 0 or len(high) == 0 or grouped["os_event"].sum() == 0:
        return {**row, "test_statistic": np.nan, "p_value": np.nan, "note": "a group is empty or there are no events"}
    test = logrank_test(low["os_time"], high["os_time"], low["os_event"], high["os_event"])
    return {**row, "test_statistic": float(test.test_statistic), "p_value": float(test.p_value), "note": ""}


def plot_km(
    model: str, grouped: pd.DataFrame, p_value: float, path: str | Path, threshold: str, time_unit: str, alpha: float
) -> None:
    """KM curves with confidence bands, the log-rank p and an at-risk table, saved as PNG."""
    fig, ax = plt.subplots(figsize=(7, 5.5))
    fitters = []
    for name, colour in zip(GROUPS, ("tab:blue", "tab:red")):
        part = grouped[grouped["group"] == name]
        if part.empty:
            continue
        fitter = KaplanMeierFitter(alpha=alpha, label=f"{name} (n={len(part)})")
        fitter.fit(part["os_time"], part["os_event"])
        fitter.plot_survival_function(ax=ax, ci_show=True, color=colour)
        fitters.append(fitter)
    p_text = "n/a" if np.isnan(p_value) else f"{p_value:.2g}"
    ax.legend(title=f"log-rank p = {p_text}", loc="upper right")
    ax.set(
        title=f"{model}: test patients pooled over folds, split at each fold's {threshold} risk",
        xlabel=f"time ({time_unit})",
        ylabel="overall survival",
        ylim=(0, 1.02),
    )
    if fitters:
        add_at_risk_counts(*fitters, ax=ax)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def risk_group_analysis(predictions: pd.DataFrame, output_dir: str | Path, cfg) -> pd.DataFrame:
    """Per model: groups, log-rank test and ``km_{model}.png``; returns the log-rank table."""
    grouped = assign_groups(predictions, cfg.risk_groups.threshold)
    rows = []
    for model, part in grouped.groupby("model", sort=False):
        row = logrank_row(model, part)
        rows.append({**row, "threshold": cfg.risk_groups.threshold})
        plot_km(
            model,
            part,
            row["p_value"],
            SurvivalFolder(output_dir).km_figure(model),
            cfg.risk_groups.threshold,
            cfg.data.time_unit,
            1 - cfg.risk_groups.confidence,
        )
    return pd.DataFrame(rows)
