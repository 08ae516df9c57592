"""The comparison table in the layout of Table 1: aggregators × survival models, one column per metric.

Cells are ``mean ± std`` over the folds that have a value (the survival stage's
``summary.csv``); a metric no fold could compute is ``N/A`` (FSVM has no IBS).
Within each survival model the best aggregator of each metric is marked:
highest, or lowest for metrics configured ``better: lower``. Means are
compared at the displayed precision, so equal-looking cells are marked alike;
nothing is marked when fewer than two aggregators have a value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from radiopath.report.runs import Run


def comparison_table(runs: list[Run], metrics: dict, decimals: int) -> pd.DataFrame:
    """One row per survival model and run (models in first-seen order); per metric mean, std, n_folds, cell, best."""
    rows = []
    for run in runs:
        if run.survival is None:
            continue
        summary = run.survival.summary.set_index(["model", "metric"])
        n_total = run.n_folds or int(summary["n_folds"].max())
        for model in dict.fromkeys(run.survival.summary["model"]):
            row = {"survival_model": model, "aggregator": run.label, "run": str(run.path)}
            for key in metrics:
                stats = summary.loc[(model, key)] if (model, key) in summary.index else None
                mean = np.nan if stats is None else float(stats["mean"])
                std = np.nan if stats is None else float(stats["std"])
                n_folds = 0 if stats is None else int(stats["n_folds"])
                row.update({
                    f"{key}_mean": mean,
                    f"{key}_std": std,
                    f"{key}_n_folds": n_folds,
                    f"{key}_cell": format_cell(mean, std, n_folds, n_total, decimals),
                })
            rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = list(dict.fromkeys(table["survival_model"]))
    table = table.sort_values("survival_model", key=lambda s: s.map(order.index), kind="stable")
    for key, spec in metrics.items():
        table[f"{key}_best"] = _best(table, key, spec["better"], decimals)
    return table.reset_index(drop=True)


def format_cell(mean: float, std: float, n_folds: int, n_total: int, decimals: int) -> str:
    """``0.716 ± 0.064``; ``N/A`` without a value; the fold count when some folds gave none."""
    if n_folds == 0 or not np.isfinite(mean):
        return "N/A"
    cell = f"{mean:.{decimals}f}" if not np.isfinite(std) else f"{mean:.{decimals}f} ± {std:.{decimals}f}"
    return cell if n_folds >= n_total else f"{cell} ({n_folds}/{n_total} folds)"


def _best(table: pd.DataFrame, key: str, better: str, decimals: int) -> pd.Series:
    if better not in ("higher", "lower"):
        raise ValueError(f"metric {key}: better must be higher or lower, got {better!r}")
    shown = table[f"{key}_mean"].round(decimals)
    best = pd.Series(False, index=table.index)
    for _, part in shown.groupby(table["survival_model"]):
        values = part.dropna()
        if len(values) < 2:
            continue
        target = values.max() if better == "higher" else values.min()
        best[values.index[values == target]] = True
    return best


def column_title(spec) -> str:
    """``C-index ↑`` / ``IBS ↓``: the metric's label and which way is better."""
    return f"{spec['label']} {'↑' if spec['better'] == 'higher' else '↓'}"


def to_csv_frame(table: pd.DataFrame, metrics: dict) -> pd.DataFrame:
    """The CSV layout: keys first, then per metric its cell text, best flag and the numbers."""
    columns = ["survival_model", "aggregator", "run"]
    for key in metrics:
        columns += [f"{key}_cell", f"{key}_best", f"{key}_mean", f"{key}_std", f"{key}_n_folds"]
    return table[columns]


def to_markdown(table: pd.DataFrame, metrics: dict) -> str:
    """A GitHub-style Markdown table; best cells in bold."""
    header = ["Survival model", "Aggregator", *(column_title(spec) for spec in metrics.values())]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [row["survival_model"], row["aggregator"]]
        cells += [f"**{row[f'{k}_cell']}**" if row[f"{k}_best"] else row[f"{k}_cell"] for k in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
