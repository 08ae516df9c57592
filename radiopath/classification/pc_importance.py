"""Random-forest importance of the principal components a pipeline classifies (the RGCNN paper's Fig. 3).

:func:`pc_importance` makes a fitted forest's table, one row per component: the block the
component comes from (``tr``, or ``cr``/``tr`` for CR + TR), its explained variance ratio in
its block's PCA, the forest's impurity importance (mean decrease in impurity, the paper's) and
the permutation importance (drop in ROC AUC) on the training cases. :func:`plot_pc_importance`
draws the paper's bar chart from one such table or from several fits' tables stacked.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.inspection import permutation_importance  # noqa: E402

from radiopath.io import atomic_save_figure  # noqa: E402

COLOURS = {"cr": "tab:orange", "tr": "tab:blue"}


def pc_importance(*, forest: RandomForestClassifier, components: np.ndarray, y: np.ndarray, blocks: list[str],
                  explained: np.ndarray, repeats: int, random_state: int) -> pd.DataFrame:
    """The table of a forest fitted on principal components; ``components`` (n, K) are the training
    cases' (before SMOTE), ``blocks`` and ``explained`` give each component's block and variance ratio."""
    permuted = permutation_importance(forest, components, y, scoring="roc_auc", n_repeats=repeats,
                                      random_state=random_state)
    return pd.DataFrame({
        "component": [f"PC{k}" for k in range(components.shape[1])],
        "block": blocks,
        "explained_variance_ratio": explained,
        "impurity_importance": forest.feature_importances_,
        "permutation_importance": permuted.importances_mean,
        "permutation_std": permuted.importances_std,
    })


def plot_pc_importance(table: pd.DataFrame, *, path: Path, title: str, dpi: int) -> Path:
    """Bars of each component's impurity importance above its permutation importance, coloured by block;
    saved as PNG at ``path``. Over several fits (``table`` stacked) the bars are means with the fits' std,
    for one fit the permutation bars carry the std over the permutation repeats."""
    order = list(dict.fromkeys(table["component"]))
    stats = table.groupby("component", sort=False).agg(
        block=("block", "first"), fits=("block", "size"), impurity=("impurity_importance", "mean"),
        impurity_std=("impurity_importance", "std"), permutation=("permutation_importance", "mean"),
        permutation_std=("permutation_importance", "std"), repeats_std=("permutation_std", "mean")).loc[order]
    single = stats["fits"] == 1
    stats["impurity_std"] = stats["impurity_std"].where(~single, 0.0)
    stats["permutation_std"] = stats["permutation_std"].where(~single, stats["repeats_std"])
    colours = [COLOURS.get(block, "tab:gray") for block in stats["block"]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(5.0, 0.35 * len(order) + 2), 5.5), sharex=True)
    top.bar(order, stats["impurity"], yerr=stats["impurity_std"], color=colours, capsize=2)
    top.set_ylabel("impurity importance (MDI)")
    top.set_title(title)
    bottom.bar(order, stats["permutation"], yerr=stats["permutation_std"], color=colours, capsize=2)
    bottom.axhline(0.0, color="black", linewidth=0.5)
    bottom.set_ylabel("permutation importance\n(ROC AUC drop, training)")
    bottom.tick_params(axis="x", rotation=90)
    top.legend(handles=[Patch(color=COLOURS.get(block, "tab:gray"), label=block.upper())
                        for block in dict.fromkeys(stats["block"])], frameon=False)
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi)
