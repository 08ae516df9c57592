"""Report figures: per-fold metric distributions (Figures 2–3), KM panels (Figure 4), training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from radiopath.io import atomic_save_figure  # noqa: E402
from radiopath.report.runs import Run  # noqa: E402
from radiopath.survival.risk_groups import assign_groups, logrank_row, plot_km  # noqa: E402


def fold_metrics(runs: list[Run]) -> pd.DataFrame:
    """All runs' per-fold metric rows with the run label as ``aggregator``."""
    parts = [run.survival.metrics.assign(aggregator=run.label) for run in runs if run.survival is not None]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _grid(metrics: dict):
    n = len(metrics)
    cols = 2 if n > 1 else 1
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def metric_figure(table: pd.DataFrame, metrics: dict, kind: str, path: Path, dpi: int, colormap: str) -> Path:
    """``kind="box"``: per-fold distributions with the fold values as dots; ``"bar"``: mean ± std.

    One panel per metric, survival models along x, one colour per aggregator;
    an aggregator without any value for a model (FSVM's IBS) is labelled N/A.
    """
    models = list(dict.fromkeys(table["model"]))
    aggregators = list(dict.fromkeys(table["aggregator"]))
    colours = plt.get_cmap(colormap)(np.arange(len(aggregators)) % 10)
    width = 0.8 / len(aggregators)
    fig, axes = _grid(metrics)
    rng = np.random.default_rng(0)  # jitter of the fold dots only
    for ax, (key, spec) in zip(axes, metrics.items()):
        for a, (aggregator, colour) in enumerate(zip(aggregators, colours)):
            for m, model in enumerate(models):
                x = m - 0.4 + width * (a + 0.5)
                rows = table[(table["model"] == model) & (table["aggregator"] == aggregator) & (table["metric"] == key)]
                values = rows["value"].dropna().to_numpy()
                if rows.empty:
                    continue
                if len(values) == 0:
                    ax.text(x, 0.5, "N/A", transform=ax.get_xaxis_transform(), ha="center", fontsize=7, rotation=90)
                    continue
                if kind == "box":
                    box = ax.boxplot(values, positions=[x], widths=width * 0.8, patch_artist=True, showfliers=False)
                    plt.setp(box["boxes"], facecolor=(*colour[:3], 0.35), edgecolor=colour)
                    plt.setp(box["medians"], color=colour)
                    ax.scatter(x + rng.uniform(-0.2, 0.2, len(values)) * width, values, s=10, color=colour, zorder=3)
                else:
                    std = values.std(ddof=1) if len(values) > 1 else 0.0
                    ax.bar(x, values.mean(), width * 0.9, yerr=std, color=colour, alpha=0.8, capsize=3)
        ax.set_xticks(range(len(models)), models)
        ax.set_title(f"{spec['label']} ({spec['better']} is better)")
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours]
    fig.legend(handles, aggregators, loc="lower center", ncol=min(len(aggregators), 3), bbox_to_anchor=(0.5, -0.04))
    what = "per-fold values" if kind == "box" else "mean ± std over folds"
    fig.suptitle(f"Survival metrics on the test folds: {what}")
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi)


def training_curves(run: Run, path: Path, dpi: int) -> Path:
    """Loss and C-index per epoch, one colour per fold (test solid, train dashed)."""
    fig, (loss_ax, c_ax) = plt.subplots(1, 2, figsize=(12, 3.8))
    for k, history in sorted(run.histories.items()):
        colour = plt.get_cmap("tab10")(k % 10)
        loss_ax.plot(history["epoch"], history["loss"], color=colour, label=f"fold {k}")
        c_ax.plot(history["epoch"], history["test_c_index"], color=colour, label=f"fold {k} test")
        c_ax.plot(history["epoch"], history["train_c_index"], color=colour, linestyle="--", alpha=0.5, lw=1)
    loss_ax.set(title="training loss", xlabel="epoch", ylabel="loss")
    c_ax.set(title="C-index (test solid, train dashed)", xlabel="epoch", ylabel="Harrell's C")
    c_ax.axhline(0.5, color="grey", lw=0.8, linestyle=":")
    loss_ax.legend(fontsize=8)
    for ax in (loss_ax, c_ax):
        ax.grid(alpha=0.3)
    fig.suptitle(run.label)
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi)


def km_panels(run: Run, figures_dir: Path, slug: str) -> tuple[list[tuple[str, Path, float]], list[str]]:
    """KM curves of each survival model's risk groups, drawn by the survival stage's own functions.

    Returns ``(model, png, log-rank p)`` per model and the reasons where none could be drawn.
    """
    survival = run.survival
    if survival is None:
        return [], []
    if survival.predictions is None or survival.predictions.empty or "config" not in (survival.settings or {}):
        return [], ["Kaplan–Meier curves need the survival stage's predictions.csv and settings.json"]
    config = OmegaConf.create(survival.settings["config"])
    threshold = config.risk_groups.threshold
    grouped = assign_groups(survival.predictions, threshold)
    panels = []
    for model, part in grouped.groupby("model", sort=False):
        p_value = logrank_row(model, part)["p_value"]
        path = figures_dir / f"km_{slug}_{model}.png"
        plot_km(
            f"{run.label}\n{model}",  # plot_km titles "{model}: ...": the run on a line of its own
            part,
            p_value,
            path,
            threshold,
            OmegaConf.select(config, "data.time_unit", default="days"),
            1 - config.risk_groups.confidence,
        )
        panels.append((model, path, p_value))
    return panels, []
