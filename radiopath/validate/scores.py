"""Scores of the method-validation benchmark and its table.

Per fold ``k`` of a training run (test patients only):

- ``own_c_index``: Harrell's C of the aggregator's own ``risk`` (``fold{k}/vectors.csv``);
  undefined for an aggregator without a risk head (Mean gives NaN risks);
- ``coxph_c_index``: CoxPH on the fold's patient vectors (``RUN/survival/metrics.csv``);
- ``auroc_{modality}``: AUROC of the node importance (``fold{k}/importance/{case_id}.pt``)
  against the planted nodes (``truth/{modality}/{case_id}.pt``), per patient, averaged over
  the test patients whose truth has planted and unplanted nodes;
- ``kept_{modality}``: for aggregators that pool (importance 0 on every node the pooling
  dropped), the fraction of a patient's planted nodes with importance > 0, averaged over
  the test patients with planted nodes;
- ``train_seconds``: the fold's training time (``fold{k}/model.pt``).

The oracle is CoxPH on the true planted-node statistic (``oracle.csv``). A value that
is undefined is NaN and shown as ``N/A``, never as 0; ``mean ± sd`` is over the folds
that have a value.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from radiopath.io import atomic_write_csv, atomic_write_text
from radiopath.layout import RunFolder, SurvivalFolder
from radiopath.report.table import format_cell
from radiopath.report.truth import importance_auroc, node_labels
from radiopath.training.trainer import concordance
from radiopath.validate.planted import truth_path

# Aggregators whose node importance is exactly 0 on the nodes their pooling dropped.
POOLING_AGGREGATORS = frozenset({"sparra"})
TABLE_MODALITIES = ("pathology", "radiology")
ORACLE = "oracle"
NA = "N/A"
FOLD_COLUMNS = ["family", "aggregator", "fold", "metric", "value"]
# Markdown columns after family and aggregator: (title, metric, decimals, the family's oracle row?).
TABLE_COLUMNS = (
    ("own-risk C", "own_c_index", 3, False),
    ("CoxPH C", "coxph_c_index", 3, False),
    ("oracle C", "coxph_c_index", 3, True),
    *((f"AUROC {m}", f"auroc_{m}", 3, False) for m in TABLE_MODALITIES),
    *((f"kept {m}", f"kept_{m}", 3, False) for m in TABLE_MODALITIES),
    ("train s/fold", "train_seconds", 1, False),
)


def kept_fraction(*, importance: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of the planted nodes with importance > 0 (kept by pooling); NaN without planted nodes."""
    truth = node_labels(importance, truth)
    if not truth.any():
        return math.nan
    return float((importance[truth] > 0).double().mean())


def own_risk_c_index(*, vectors: pd.DataFrame, survival: pd.DataFrame) -> float:
    """Harrell's C of ``risk`` over the test rows of ``vectors``; NaN for an aggregator without risk."""
    test = vectors[vectors["split"] == "test"]
    outcome = survival.loc[test["case_id"]]
    return concordance(outcome["os_time"].to_numpy(float), outcome["os_event"].to_numpy(int),
                     test["risk"].to_numpy(float))


def node_scores(*, run: RunFolder, fold: int, truth_dir: Path, case_ids: list[str],
                pooling: bool) -> dict[str, float]:
    """``auroc_{m}`` and ``kept_{m}`` of fold ``fold``'s test patients (NaN where undefined)."""
    aurocs = {m: [] for m in TABLE_MODALITIES}
    kept = {m: [] for m in TABLE_MODALITIES}
    for case_id in case_ids:
        path = run.importance(fold, case_id)
        if not path.is_file():  # Mean gives no importance
            continue
        importance = torch.load(path, weights_only=True)
        for modality, values in importance.items():
            truth = torch.load(truth_path(truth_dir, modality, case_id), weights_only=True)
            try:
                aurocs[modality].append(importance_auroc(importance=values, truth=truth))
                if pooling:
                    kept[modality].append(kept_fraction(importance=values, truth=truth))
            except ValueError as error:
                raise ValueError(f"{path} ({modality}) does not match its truth: {error}") from error
    scores = {}
    for modality in TABLE_MODALITIES:
        scores[f"auroc_{modality}"] = _mean_defined(aurocs[modality])
        scores[f"kept_{modality}"] = _mean_defined(kept[modality])
    return scores


def _mean_defined(values: list[float]) -> float:
    defined = [v for v in values if np.isfinite(v)]
    return float(np.mean(defined)) if defined else math.nan


def survival_c_index(*, survival_dir: Path) -> dict[int, float]:
    """Fold -> test C-index of CoxPH from a survival stage's ``metrics.csv``."""
    path = SurvivalFolder(survival_dir).metrics
    metrics = pd.read_csv(path)
    rows = metrics[(metrics["model"] == "CoxPH") & (metrics["metric"] == "c_index")]
    if rows.empty:
        raise ValueError(f"{path} has no c_index of CoxPH")
    return {int(fold): float(value) for fold, value in zip(rows["fold"], rows["value"])}


def run_scores(*, family: str, aggregator: str, run_dir: Path, manifest: Path, truth_dir: Path) -> pd.DataFrame:
    """Every metric of one training run per fold: ``family, aggregator, fold, metric, value``."""
    run = RunFolder(run_dir)
    folds = pd.read_csv(run.folds, dtype={"case_id": str})
    survival = pd.read_csv(manifest, dtype={"case_id": str}).set_index("case_id")
    coxph = survival_c_index(survival_dir=run.survival)
    rows = []
    for k in sorted(int(k) for k in folds["fold"].unique()):
        vectors = pd.read_csv(run.vectors(k), dtype={"case_id": str})
        values = {
            "own_c_index": own_risk_c_index(vectors=vectors, survival=survival),
            "coxph_c_index": coxph.get(k, math.nan),
            **node_scores(run=run, fold=k, truth_dir=truth_dir,
                          case_ids=folds.loc[folds["fold"] == k, "case_id"].tolist(),
                          pooling=aggregator in POOLING_AGGREGATORS),
            "train_seconds": float(torch.load(run.model(k), weights_only=True)["train_seconds"]),
        }
        rows += [(family, aggregator, k, metric, value) for metric, value in values.items()]
    return pd.DataFrame(rows, columns=FOLD_COLUMNS)


def oracle_scores(*, family: str, survival_dir: Path) -> pd.DataFrame:
    """The oracle's CoxPH C-index per fold, as rows of aggregator ``oracle``."""
    rows = [(family, ORACLE, fold, "coxph_c_index", value)
            for fold, value in survival_c_index(survival_dir=survival_dir).items()]
    return pd.DataFrame(rows, columns=FOLD_COLUMNS)


def summarise(*, fold_rows: pd.DataFrame) -> pd.DataFrame:
    """``family, aggregator, metric, mean, std, n_folds``: sample std over the folds with a value."""
    columns = ["family", "aggregator", "metric"]
    stats = (fold_rows.dropna(subset=["value"]).groupby(columns, sort=False)["value"]
             .agg(mean="mean", std="std", n_folds="count"))
    keys = pd.MultiIndex.from_frame(fold_rows[columns].drop_duplicates())
    stats = stats.reindex(keys)
    stats["n_folds"] = stats["n_folds"].fillna(0).astype(int)
    return stats.reset_index()


def markdown_table(*, fold_rows: pd.DataFrame, families: list[str], aggregators: list[str]) -> str:
    """One row per family and aggregator: C-indices, the family's oracle, AUROC, kept fraction, time."""
    header = ["family", "aggregator", *(title for title, *_ in TABLE_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * len(TABLE_COLUMNS)]
    for family in families:
        for aggregator in aggregators:
            cells = [_cell(fold_rows, family, ORACLE if oracle else aggregator, metric, decimals)
                     for _, metric, decimals, oracle in TABLE_COLUMNS]
            lines.append("| " + " | ".join([family, aggregator, *cells]) + " |")
    return "\n".join(lines) + "\n"


def _cell(fold_rows: pd.DataFrame, family: str, aggregator: str, metric: str, decimals: int) -> str:
    values = fold_rows.loc[(fold_rows["family"] == family) & (fold_rows["aggregator"] == aggregator)
                           & (fold_rows["metric"] == metric), "value"]
    if values.empty:
        return NA
    defined = values.dropna()
    std = float(defined.std()) if len(defined) > 1 else math.nan
    mean = float(defined.mean()) if len(defined) else math.nan
    return format_cell(mean, std, len(defined), len(values), decimals)


def write_tables(*, fold_rows: pd.DataFrame, output_dir: Path, families: list[str],
                 aggregators: list[str]) -> str:
    """Write ``table_folds.csv``, ``table.csv`` and ``table.md`` in ``output_dir``; returns the Markdown."""
    atomic_write_csv(fold_rows, output_dir / "table_folds.csv", na_rep=NA)
    atomic_write_csv(summarise(fold_rows=fold_rows), output_dir / "table.csv", na_rep=NA)
    table = markdown_table(fold_rows=fold_rows, families=families, aggregators=aggregators)
    atomic_write_text(table, output_dir / "table.md")
    return table
