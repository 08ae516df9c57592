r"""Time the survival benchmark, this tree against a baseline commit, side by side.

Run with the project venv::

    .venv/bin/python scripts/bench_survival.py --baseline 87c7ec0     # both cases, against the per-feature lifelines filter
    .venv/bin/python scripts/bench_survival.py --cases 32x256:5       # 32 patients x 256 features, 5 folds

Each case ``PxF:K`` is a synthetic feature table of P patients and F features, timed over
its first K outer folds (of 5). The table: 4 prognostic Gaussian features, 5 % binary
features (some too rare for the near-constant filter), one constant column, the rest
Gaussian noise; exponential times with a hazard from the prognostic features, rounded to
whole days (ties among 200 patients), about 30 % censored.

Both implementations run ``radiopath.survival.benchmark.run_benchmark`` on the same folds
with their own ``conf/survival.yaml`` unchanged: RSF, CoxPH, Coxnet and FSVM, each tuned by
5-fold inner-CV grid search. The baseline is a git worktree of ``--baseline`` (made with
``git worktree add`` if ``--worktree`` is absent). Each run is a worker process of this
script with ``PYTHONPATH`` at that implementation's tree and the same venv; besides the
wall time of ``run_benchmark`` it reports the time spent in ``UnivariateCoxSelector.fit``
and how often it ran, and the time of each model's ``tune_and_fit``. This tree also runs
with ``threads=null`` (BLAS and OpenMP threads unpinned, the baseline's behaviour) to
separate the effect of the ``threads`` setting from the rest, and serially (``tuning.n_jobs=1
estimators.RSF.n_jobs=1``: one core, where the defaults use two; its results must equal the
defaults').

Agreement: per outer fold and model, the chosen hyperparameters and the selected features
must be equal, and the metrics are compared as a maximum absolute difference (a note names
the largest one above ``--atol``). The load average is printed beside the table; the table
goes to stdout and to ``--results`` (markdown).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def synthetic_table(n_patients: int, n_features: int, seed: int = 0) -> pd.DataFrame:
    """The feature table of one case: case_id index, os_time, os_event, f0 ... f{F-1}."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_patients, n_features))
    binary = rng.choice(np.arange(5, n_features), size=max(1, n_features // 20), replace=False)
    X[:, binary] = rng.random((n_patients, len(binary))) < rng.uniform(0.01, 0.5, len(binary))
    X[:, -1] = 1.0  # constant
    hazard = np.exp(0.8 * X[:, 0] + 0.5 * X[:, 1] - 0.5 * X[:, 2] + 0.3 * X[:, 3])
    event_time = rng.exponential(1000 / hazard)
    censor_time = rng.uniform(200, 3000, n_patients)
    table = pd.DataFrame(X, columns=[f"f{j}" for j in range(n_features)])
    table.index = pd.Index([f"case{i:04d}" for i in range(n_patients)], name="case_id")
    table.insert(0, "os_event", (event_time <= censor_time).astype(int))
    table.insert(0, "os_time", np.maximum(np.round(np.minimum(event_time, censor_time)), 1.0))
    return table


def worker(args) -> None:
    """Run one implementation (the one on PYTHONPATH) on one case and write its JSON report."""
    from hydra import compose, initialize_config_dir

    import radiopath
    import radiopath.config  # noqa: F401  (registers the ${dirname:} resolver)
    from radiopath.survival import benchmark, selection
    from radiopath.survival.data import folds_from_table, stratified_folds

    tree = Path(args.tree).resolve()
    if tree not in Path(radiopath.__file__).resolve().parents:
        raise RuntimeError(f"imported {radiopath.__file__}, not the tree {tree}: check PYTHONPATH")
    n_patients, n_features, n_folds = parse_case(args.case)
    table = synthetic_table(n_patients, n_features)
    with initialize_config_dir(config_dir=str(tree / "conf"), version_base="1.3"):
        cfg = compose("survival", list(args.override))
    folds = folds_from_table(table, stratified_folds(table, n_folds=5, seed=cfg.seed))[:n_folds]

    selector = {"seconds": 0.0, "fits": 0}
    original_fit = selection.UnivariateCoxSelector.fit

    def timed_fit(self, X, y):
        start = time.perf_counter()
        try:
            return original_fit(self, X, y)
        finally:
            selector["seconds"] += time.perf_counter() - start
            selector["fits"] += 1

    model_seconds = {}
    original_tune = benchmark.tune_and_fit

    def timed_tune(name, *rest, **options):
        start = time.perf_counter()
        try:
            return original_tune(name, *rest, **options)
        finally:
            model_seconds[name] = model_seconds.get(name, 0.0) + time.perf_counter() - start

    selection.UnivariateCoxSelector.fit = timed_fit
    benchmark.tune_and_fit = timed_tune  # run_benchmark looks it up in the module
    start = time.perf_counter()
    result = benchmark.run_benchmark(folds, cfg)
    seconds = time.perf_counter() - start
    models = {
        f"{fold}/{name}": {k: settings.get(k) for k in ("chosen", "selected_features", "inner_cv_score", "error")}
        for fold, fold_settings in result.folds.items()
        for name, settings in fold_settings["models"].items()
    }
    report = {
        "seconds": seconds,
        "selector_seconds": selector["seconds"],
        "selector_fits": selector["fits"],
        "model_seconds": model_seconds,
        "models": models,
        "metrics": result.metrics[["fold", "model", "metric", "value"]].to_dict("records"),
        "errors": result.errors,
    }
    Path(args.report).write_text(json.dumps(report, allow_nan=True))


def parse_case(case: str) -> tuple[int, int, int]:
    """``PxF:K`` -> (patients, features, outer folds timed)."""
    size, _, folds = case.partition(":")
    patients, features = (int(v) for v in size.lower().split("x"))
    return patients, features, int(folds or 5)


def run_worker(tree: Path, case: str, overrides: list[str], report: Path) -> dict:
    """One worker process with ``PYTHONPATH`` at ``tree``; returns its report."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONUTF8="1", TQDM_DISABLE="1")
    command = [sys.executable, __file__, "--worker", "--tree", str(tree), "--case", case, "--report", str(report)]
    for override in overrides:
        command += ["--override", override]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(report.read_text())


def compare(before: dict, after: dict) -> dict:
    """Same hyperparameters and features per (fold, model), and the largest metric difference."""
    keys = sorted(set(before["models"]) | set(after["models"]))
    same_params = all(
        before["models"].get(k, {}).get("chosen") == after["models"].get(k, {}).get("chosen") for k in keys
    )
    same_features = all(
        before["models"].get(k, {}).get("selected_features") == after["models"].get(k, {}).get("selected_features")
        for k in keys
    )
    a = pd.DataFrame(before["metrics"]).set_index(["fold", "model", "metric"])["value"]
    b = pd.DataFrame(after["metrics"]).set_index(["fold", "model", "metric"])["value"]
    a, b = a.align(b)
    both_nan = a.isna() & b.isna()
    difference = (a - b).abs().where(~both_nan, 0.0)
    if difference.isna().any():  # a metric computed by one implementation only
        return {"same": same_params and same_features, "max_diff": float("nan"), "where": "a metric missing on one side"}
    fold, model, metric = difference.idxmax()
    return {"same": same_params and same_features, "max_diff": float(difference.max()), "where": f"{model} {metric}"}


def ensure_worktree(worktree: Path, baseline: str) -> str:
    """The baseline's tree at ``worktree`` (added if absent); returns its commit."""
    if not worktree.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), baseline], check=True)
    return subprocess.run(
        ["git", "-C", str(worktree), "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["32x256:5", "200x1024:1"], help="PxF:K (K outer folds timed)")
    parser.add_argument("--baseline", default="HEAD")
    parser.add_argument("--worktree", type=Path, default=Path("/tmp/wt_survival_base"))
    parser.add_argument("--atol", type=float, default=1e-9, help="metric differences above this get a note")
    parser.add_argument("--results", type=Path, default=REPO / "scripts" / "bench_survival_results.md")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/bench_survival"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    parser.add_argument("--override", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    commit = ensure_worktree(args.worktree, args.baseline)
    args.scratch.mkdir(parents=True, exist_ok=True)
    header = (
        "| case (patients x features) | outer folds timed | before (s) | after (s) | ratio "
        "| UnivariateCoxSelector.fit: calls, s before -> after (one core; the defaults fit it in worker processes) "
        "| after by model (s) | after, threads=null (s) "
        "| after, one core (s) | ratio, one core "
        "| same hyperparameters and selected features | metrics max abs diff: after; threads=null |"
    )
    lines, notes = [header, "|" + "---|" * (header.count("|") - 1)], []
    for case in args.cases:
        patients, features, folds = parse_case(case)
        label = case.replace(":", "_")
        before = run_worker(args.worktree, case, [], args.scratch / f"{label}_before.json")
        after = run_worker(REPO, case, [], args.scratch / f"{label}_after.json")
        unpinned = run_worker(REPO, case, ["threads=null"], args.scratch / f"{label}_unpinned.json")
        serial = run_worker(
            REPO, case, ["tuning.n_jobs=1", "estimators.RSF.n_jobs=1"], args.scratch / f"{label}_serial.json"
        )
        check, check_unpinned = compare(before, after), compare(before, unpinned)
        check_serial = compare(after, serial)
        by_model = ", ".join(f"{name} {seconds:.1f}" for name, seconds in after["model_seconds"].items())
        same = "yes" if check["same"] and check_unpinned["same"] and check_serial["same"] else "NO"
        lines.append(
            f"| {patients} x {features} | {folds} of 5 | {before['seconds']:.1f} | {after['seconds']:.1f} "
            f"| {before['seconds'] / after['seconds']:.1f}x "
            f"| {before['selector_fits']}, {before['selector_seconds']:.1f} -> "
            f"{serial['selector_fits']}, {serial['selector_seconds']:.2f} "
            f"| {by_model} | {unpinned['seconds']:.1f} | {serial['seconds']:.1f} "
            f"| {before['seconds'] / serial['seconds']:.1f}x | {same} "
            f"| {check['max_diff']:.2g}; {check_unpinned['max_diff']:.2g} |"
        )
        print(lines[-1], flush=True)
        if folds < 5:
            notes.append(
                f"{patients} x {features}: the first {folds} of 5 outer folds timed, for both implementations "
                f"(all five would take the baseline ~{before['seconds'] * 5 / folds / 60:.0f} min)."
            )
        for name, checked in (("after", check), ("threads=null", check_unpinned), ("one core vs after", check_serial)):
            if checked["max_diff"] > args.atol:
                notes.append(
                    f"{patients} x {features}, {name}: largest metric difference {checked['max_diff']:.2g} "
                    f"({checked['where']})."
                )
        for name, report in (("before", before), ("after", after), ("threads=null", unpinned), ("one core", serial)):
            if report["errors"]:
                notes.append(f"{case} {name}: {len(report['errors'])} failed fits, e.g. {report['errors'][0]}")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    table = "\n".join(lines + [""] + [f"- {note}" for note in notes])
    text = (
        f"# Survival benchmark: {commit} (before) vs this tree (after)\n\n"
        f"`{' '.join(['.venv/bin/python', 'scripts/bench_survival.py', '--cases', *args.cases])}` "
        f"on {os.cpu_count()} CPU cores, load average {load} at the end.\n\n{table}\n"
    )
    print(f"\n{table}\nload average {load}")
    args.results.write_text(text)


if __name__ == "__main__":
    main()
