"""ROC and calibration figures of the test-split predictions (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from radiopath.io import atomic_save_figure  # noqa: E402


def plot_roc(predictions: pd.DataFrame, metrics: pd.DataFrame, path: Path, title: str, dpi: int) -> Path:
    """Test-split ROC curve of every pipeline, AUC and its CI in the legend."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    auc = metrics[(metrics["split"] == "test") & (metrics["metric"] == "roc_auc")].set_index("pipeline")
    for pipeline, test in predictions[predictions["split"] == "test"].groupby("pipeline", sort=False):
        fpr, tpr, _ = roc_curve(test["y"], test["p"])
        row = auc.loc[pipeline]
        ax.plot(fpr, tpr, lw=1.8, label=f"{pipeline}: {row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8, title="AUC [95% CI]")
    return atomic_save_figure(fig, path, dpi)


def plot_calibration(calibration: pd.DataFrame, brier: pd.Series, path: Path, title: str, dpi: int) -> Path:
    """Observed positive fraction vs mean predicted probability per bin, with bootstrap CIs."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for pipeline, bins in calibration.groupby("pipeline", sort=False):
        errors = [bins["observed"] - bins["ci_low"], bins["ci_high"] - bins["observed"]]
        ax.errorbar(bins["mean_predicted"], bins["observed"], yerr=errors, marker="o", capsize=3, lw=1.5,
                    label=f"{pipeline} (Brier {brier[pipeline]:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set(xlabel="mean predicted probability", ylabel="observed fraction positive", title=title,
           xlim=(0, 1), ylim=(-0.02, 1.02))
    ax.legend(loc="upper left", fontsize=8)
    return atomic_save_figure(fig, path, dpi)
