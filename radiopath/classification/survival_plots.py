"""Figures of the prognosis analysis: Kaplan-Meier curves of the predicted groups, forest plot of hazard ratios."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from lifelines import KaplanMeierFitter  # noqa: E402

from radiopath.classification.prognosis import ENDPOINT_TITLES, POSITIVE  # noqa: E402
from radiopath.io import atomic_save_figure  # noqa: E402

GROUP_STYLE = ((1, "predicted positive", "tab:red"), (0, "predicted negative", "tab:blue"))


def _p_text(value: float) -> str:
    return "N/A" if not np.isfinite(value) else ("< 0.001" if value < 0.001 else f"{value:.3f}")


def plot_km(curves: dict[str, pd.DataFrame], hazard: pd.DataFrame, path: Path, title: str, time_unit: str,
            level: float, dpi: int) -> Path:
    """One panel per pipeline: KM curve of each predicted group with its CI band, log-rank p and HR in the title."""
    fig, axes = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 4), squeeze=False)
    rows = hazard[hazard["variable"] == POSITIVE].set_index("pipeline")
    for ax, (pipeline, data) in zip(axes[0], curves.items()):
        for value, label, colour in GROUP_STYLE:
            group = data[data["positive"] == value]
            if len(group):
                km = KaplanMeierFitter(alpha=1 - level).fit(group["time"], group["event"],
                                                            label=f"{label} (n = {len(group)})")
                km.plot_survival_function(ax=ax, color=colour, ci_show=True)
        row = rows.loc[pipeline]
        hr = "N/A" if not np.isfinite(row["hr"]) else f"{row['hr']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
        ax.set(title=f"{pipeline}\nlog-rank p {_p_text(row['logrank_p'])}, HR {hr}", xlabel=f"time ({time_unit})",
               ylabel="survival probability", ylim=(0, 1.02))
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi)


def plot_forest(hazard: pd.DataFrame, multivariable: pd.DataFrame, path: Path, dpi: int) -> Path:
    """Hazard ratio of predicted positive vs negative with its CI: univariate and adjusted, per set, endpoint, pipeline."""
    uni = hazard[hazard["variable"] == POSITIVE].assign(model="univariate")
    adjusted = multivariable[multivariable["variable"] == POSITIVE].assign(model="adjusted")
    rows = pd.concat([uni, adjusted], ignore_index=True).sort_values(["set", "endpoint", "pipeline"], kind="stable")
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.2))
    finite = rows[np.isfinite(rows["hr"])]
    positions = np.arange(len(rows))[::-1]
    for position, (_, row) in zip(positions, rows.iterrows()):
        label = f"{row['set']} | {ENDPOINT_TITLES.get(row['endpoint'], row['endpoint'])} | {row['pipeline']} | {row['model']}"
        ax.text(-0.02, position, label, transform=ax.get_yaxis_transform(), ha="right", va="center", fontsize=7)
        if np.isfinite(row["hr"]):
            colour = "black" if row["model"] == "univariate" else "tab:purple"
            ax.errorbar(row["hr"], position, xerr=[[row["hr"] - row["ci_low"]], [row["ci_high"] - row["hr"]]],
                        fmt="s", color=colour, capsize=2, ms=4)
        else:
            ax.text(1, position, "N/A", ha="center", va="center", fontsize=7, color="grey")
    ax.axvline(1, ls="--", color="grey", lw=1)
    if len(finite):
        ax.set_xscale("log")
        # Few events give CIs over decades: keep the axis readable, the table has the numbers.
        ax.set_xlim(max(finite["ci_low"].min() * 0.8, 1e-2), min(finite["ci_high"].max() * 1.25, 1e3))
    ax.set(yticks=[], xlabel="hazard ratio, predicted positive vs negative (log scale)",
           ylim=(-1, len(rows)))
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi)


def plot_subgroup_forest(table: pd.DataFrame, path: Path, title: str, dpi: int) -> Path:
    """HR of the 0-10 score within each subgroup level (rows), one marker per endpoint; N/A levels greyed."""
    keys = list(dict.fromkeys(zip(table["pipeline"], table["subgroup"], table["level"])))
    endpoints = list(dict.fromkeys(table["endpoint"]))
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(keys) + 1.4))
    positions = dict(zip(keys, np.arange(len(keys))[::-1]))
    colours = dict(zip(endpoints, ("tab:red", "tab:orange", "tab:blue", "tab:green")))
    for key, position in positions.items():
        ax.text(-0.02, position, " | ".join(map(str, key)), transform=ax.get_yaxis_transform(), ha="right",
                va="center", fontsize=7)
    for i, endpoint in enumerate(endpoints):
        rows = table[(table["endpoint"] == endpoint) & np.isfinite(table["hr"])]
        y = [positions[key] + 0.25 * (i - (len(endpoints) - 1) / 2)
             for key in zip(rows["pipeline"], rows["subgroup"], rows["level"])]
        ax.errorbar(rows["hr"], y, xerr=[rows["hr"] - rows["ci_low"], rows["ci_high"] - rows["hr"]], fmt="o",
                    ms=3, capsize=2, color=colours.get(endpoint, "black"), label=endpoint)
    ax.axvline(1, ls="--", color="grey", lw=1)
    finite = table[np.isfinite(table["hr"])]
    if len(finite):
        ax.set_xscale("log")
        ax.set_xlim(max(finite["ci_low"].min() * 0.8, 1e-2), min(finite["ci_high"].max() * 1.25, 1e3))
    ax.set(yticks=[], ylim=(-1, len(keys)), title=title,
           xlabel="hazard ratio per point of the 0-10 score (log scale); levels without a marker: N/A (see table)")
    ax.title.set_fontsize(9)
    ax.xaxis.label.set_fontsize(8)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi)
