r"""Ablation of SPARRA's default recipe: from the paper's settings to the recipe, one change at a time.

Each step is one ``python -m radiopath.validate`` run (SPARRA only, same planted cohorts and
folds, the changes of all steps before it applied cumulatively), and the script prints one
Markdown row per step and family: own-risk C-index, CoxPH C-index on the vectors, the
oracle, node-importance AUROC and the fraction of planted nodes kept, mean ± sd over folds.
To keep it to minutes the cohorts are smaller than the benchmark's (``--pathology-nodes``,
``--radiology-nodes``)::

    .venv/bin/python scripts/ablation_sparra.py                       # the shift family, 150 patients
    .venv/bin/python scripts/ablation_sparra.py --families shift --parallel 1

Results land in ``runs/ablation/{step}/``; a rerun reuses finished steps.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

# conf/model/sparra_paper.yaml and section 3.1, as overrides of the default model (the benchmark sets `model`).
PAPER = ["model.kwargs.hidden=128", "model.kwargs.attention_dim=64", "model.kwargs.dropout=0.5",
         "model.kwargs.residual=false", "model.kwargs.ratio=0.2", "model.kwargs.min_nodes=1",
         "model.kwargs.score=linear", "model.kwargs.tau_vi=1.0", "model.kwargs.tau=1e-3",
         "model.kwargs.reduction=sum", "training.epochs=20", "training.batch_size=32", "training.lr=3e-4",
         "training.weight_decay=1e-5"]
# (step name, what it changes): cumulative, the last step is conf/model/sparra.yaml + conf/train.yaml.
STEPS = [
    ("paper", []),
    ("+ width 32, dropout 0.1",
     ["model.kwargs.hidden=32", "model.kwargs.attention_dim=16", "model.kwargs.dropout=0.1"]),
    ("+ per-node mean KL/recon, KL weight 0.1",
     ["model.kwargs.reduction=mean", "model.kwargs.tau_vi=0.1", "model.kwargs.tau=1.0"]),
    ("+ 320 steps (40 epochs of 16), lr 1e-3, wd 1e-4",
     ["training.epochs=40", "training.batch_size=16", "training.lr=1e-3", "training.weight_decay=1e-4"]),
    ("+ top-k 0.5, at least 8 nodes, gated score of either sign",
     ["model.kwargs.ratio=0.5", "model.kwargs.min_nodes=8", "model.kwargs.score=gated"]),
    ("+ residual GCN blocks (= recipe)", ["model.kwargs.residual=true"]),
]
METRICS = [("own-risk C", "own_c_index"), ("CoxPH C", "coxph_c_index"),
           ("AUROC path", "auroc_pathology"), ("AUROC rad", "auroc_radiology"),
           ("kept path", "kept_pathology"), ("kept rad", "kept_radiology")]


def step_overrides(index: int) -> list[str]:
    """The SPARRA overrides of step ``index``: the paper's settings plus every change up to it."""
    return PAPER + [o for _, changes in STEPS[1:index + 1] for o in changes]


def run_step(index: int, args) -> Path:
    """One validate run for step ``index``; returns its output folder."""
    out = Path(args.output_dir) / f"step{index}"
    overrides = ",".join(f"'{o}'" for o in step_overrides(index))
    command = [sys.executable, "-m", "radiopath.validate", f"families=[{','.join(args.families)}]",
               "aggregators=[sparra]", f"n_patients={args.patients}", "jobs=1", f"output_dir={out}",
               f"+cohort.pathology_nodes=[{args.pathology_nodes[0]},{args.pathology_nodes[1]}]",
               f"+cohort.radiology_nodes=[{args.radiology_nodes[0]},{args.radiology_nodes[1]}]",
               f"aggregator_overrides.sparra=[{overrides}]", *args.validate]
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as stream:
        done = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"step {index} ({STEPS[index][0]}) failed: see {log}")
    return out


def cell(rows: pd.DataFrame, metric: str) -> str:
    values = rows.loc[rows["metric"] == metric, "value"].dropna()
    return "N/A" if values.empty else f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["shift"])
    parser.add_argument("--patients", type=int, default=150)
    parser.add_argument("--pathology-nodes", type=int, nargs=2, default=[300, 1200])
    parser.add_argument("--radiology-nodes", type=int, nargs=2, default=[100, 400])
    parser.add_argument("--parallel", type=int, default=2, help="steps run at once (one core each)")
    parser.add_argument("--output-dir", default="runs/ablation")
    parser.add_argument("--validate", nargs="*", default=[], help="extra python -m radiopath.validate overrides")
    args = parser.parse_args()

    with ThreadPoolExecutor(args.parallel) as pool:
        outputs = list(pool.map(lambda i: run_step(i, args), range(len(STEPS))))
    print("| step | family | " + " | ".join(title for title, _ in METRICS) + " | oracle C |")
    print("|---|---|" + "---:|" * (len(METRICS) + 1))
    for (name, _), out in zip(STEPS, outputs):
        folds = pd.read_csv(out / "table_folds.csv", keep_default_na=False, na_values=["N/A", ""])
        for family in args.families:
            rows = folds[(folds["family"] == family) & (folds["aggregator"] == "sparra")]
            oracle = folds[(folds["family"] == family) & (folds["aggregator"] == "oracle")]
            print(f"| {name} | {family} | " + " | ".join(cell(rows, m) for _, m in METRICS)
                  + f" | {cell(oracle, 'coxph_c_index')} |")


if __name__ == "__main__":
    main()
