"""The method-validation benchmark: planted-signal cohorts through the real train → survival path.

Per family, under ``output_dir/{family}/``:

- ``cohort/``: the planted cohort (``graphs/``, ``truth/``, ``oracle.csv``, ``cohort.json``,
  ``manifest.csv`` last), written by the generator with the ``cohort`` settings;
- ``{aggregator}/``: a training run from the composed ``train`` config (the shipped defaults of
  ``conf/train.yaml`` and ``conf/model/*.yaml`` plus the configured overrides) and its
  survival benchmark in ``survival/`` (CoxPH, no univariate selection); ``job.log`` holds
  the job's output;
- ``oracle/``: CoxPH on ``oracle.csv`` (the true planted-node statistic) on the same folds;
- ``settings.json``: the cohort settings the family was made with.

The first aggregator's run makes ``folds.csv``; every other run of the family gets a copy
before training (``load_or_make_folds`` reuses it), so all see the same test patients.
Work is (family, aggregator) jobs in a pool of ``jobs`` worker processes with one torch
and BLAS thread each; the family's first job also writes the cohort and runs the
oracle, the others start when it has finished. A rerun skips the cohort when its
``manifest.csv`` (written last) exists, training when every fold's ``vectors.csv`` exists, and a
survival benchmark when its ``settings.json`` exists with the same config and the vectors did
not change. Finished work made with other settings is never reused silently: a family whose
cohort settings changed, or a run whose composed train config differs from its
``config.yaml`` (other overrides, or changed defaults in ``conf/``), stops the benchmark at
start, naming the folder to delete; a survival benchmark with another config is redone.
"""

from __future__ import annotations

import json
import sys
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from time import perf_counter
from typing import Callable

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

from radiopath import config  # noqa: F401  (registers the ${dirname:} resolver, in workers too)
from radiopath.config import CONF_DIR
from radiopath.errors import ConfigError
from radiopath.io import atomic_write_text
from radiopath.layout import RunFolder, SurvivalFolder
from radiopath.modality import NAMES as MODALITIES
from radiopath.models import AGGREGATORS
from radiopath.repro import active, run_record
from radiopath.survival.benchmark import format_summary
from radiopath.survival.stage import output_dir_for, run_survival
from radiopath.training.stage import run_config, run_training
from radiopath.validate import scores

# Keys the benchmark sets itself: an override of one of them would break the layout or the folds.
TRAIN_KEYS = frozenset({"data.manifest", "data.graph_dir", "output_dir", "model", "modalities", "threads", "fold"})
SURVIVAL_KEYS = frozenset({"run_dir", "features", "output_dir", "data.manifest", "models",
                           "selection.univariate_cox", "tuning.n_jobs", "estimators.RSF.n_jobs"})
# What a family's cohort depends on (write_planted_cohort's arguments).
SETTINGS_KEYS = ("n_patients", "seed", "cohort")


@dataclass(frozen=True)
class Job:
    """One (family, aggregator) run; the family's first job also writes the cohort and runs the oracle."""

    family: str
    aggregator: str
    cohort: Path
    train: DictConfig
    survival: DictConfig
    generator_args: dict
    generate: Callable | None = None    # first job: write_planted_cohort
    oracle: DictConfig | None = None    # first job: CoxPH on oracle.csv
    folds_from: Path | None = None      # later jobs: the first run's folds.csv

    @property
    def name(self) -> str:
        return f"{self.family}/{self.aggregator}"

    @property
    def run_dir(self) -> Path:
        return Path(self.train.output_dir)

    @property
    def first(self) -> bool:
        return self.folds_from is None


@dataclass
class JobResult:
    """Wall seconds of each part that ran, the parts skipped as finished, and notes (failed folds, cases)."""

    seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """``12.3 s (cohort 2.0 s, train 8.1 s, survival 2.2 s)`` plus the skipped parts."""
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.seconds.items())
        text = f"{sum(self.seconds.values()):.1f} s" + (f" ({parts})" if parts else "")
        return text + (f"; finished before: {', '.join(self.skipped)}" if self.skipped else "")


@dataclass
class Outcome:
    """The benchmark's Markdown table, its failures (one line each) and its total wall time."""

    table: str
    failed: list[str]
    seconds: float


def compose_stage(*, name: str, overrides: list[str]) -> DictConfig:
    """A stage's config composed from ``conf/`` like its command line would (``train``, ``survival``).

    Inside ``python -m radiopath.validate`` hydra is initialised already, on ``conf/`` too.
    """
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=name, overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def check_config(*, cfg: DictConfig, families: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The chosen families and aggregators; a bad value is a :class:`ConfigError` naming its key."""
    # A bare `null` (YAML, command line) is None: it names the null family.
    chosen = ["null" if f is None else str(f) for f in cfg.families]
    aggregators = [str(a) for a in cfg.aggregators]
    for key, values, allowed in (("families", chosen, families), ("aggregators", aggregators, tuple(AGGREGATORS.names()))):
        unknown = [v for v in values if v not in allowed]
        if unknown or not values or len(set(values)) < len(values):
            raise ConfigError(key, f"{values} must be distinct values of {list(allowed)}"
                              + (f"; unknown: {unknown}" if unknown else ""))
    if not isinstance(cfg.jobs, int) or cfg.jobs < 1:
        raise ConfigError("jobs", f"must be a whole number >= 1, got {cfg.jobs!r}")
    unknown = sorted(set(cfg.aggregator_overrides) - set(AGGREGATORS))
    if unknown:
        raise ConfigError("aggregator_overrides", f"unknown aggregator(s) {unknown}; choose from {AGGREGATORS.names()}")
    lists = {"train_overrides": (cfg.train_overrides, TRAIN_KEYS),
             "survival_overrides": (cfg.survival_overrides, SURVIVAL_KEYS),
             **{f"aggregator_overrides.{a}": (o, TRAIN_KEYS) for a, o in cfg.aggregator_overrides.items()}}
    for key, (overrides, managed) in lists.items():
        taken = [o for o in overrides if str(o).lstrip("+~").split("=", 1)[0] in managed]
        if taken:
            raise ConfigError(key, f"{taken} set keys the benchmark sets itself ({', '.join(sorted(managed))})")
    return chosen, aggregators


def plan_family(*, cfg: DictConfig, family: str, aggregators: list[str], output_dir: Path,
                generate: Callable) -> list[Job]:
    """The family's jobs, first aggregator first, with their composed train and survival configs."""
    root = output_dir / family
    cohort = root / "cohort"
    first_run = root / aggregators[0]
    # One process per job: the pool shares the cores (and a worker process of the pool must not
    # start worker processes of its own).
    survival_base = ["models=[CoxPH]", "selection.univariate_cox=false", "tuning.n_jobs=1", "estimators.RSF.n_jobs=1",
                     f"data.manifest={_quoted(cohort / 'manifest.csv')}", *map(str, cfg.survival_overrides)]
    jobs = []
    for aggregator in aggregators:
        run_dir = root / aggregator
        train = compose_stage(name="train", overrides=[
            f"data.manifest={_quoted(cohort / 'manifest.csv')}", f"data.graph_dir={_quoted(cohort / 'graphs')}",
            f"output_dir={_quoted(run_dir)}", f"model={aggregator}", f"modalities=[{','.join(MODALITIES)}]",
            "threads=1", *map(str, cfg.train_overrides), *map(str, cfg.aggregator_overrides.get(aggregator, [])),
        ])
        survival = compose_stage(name="survival", overrides=[f"run_dir={_quoted(run_dir)}", *survival_base])
        common = {"family": family, "aggregator": aggregator, "cohort": cohort, "train": train,
                  "survival": survival,
                  "generator_args": {"n_patients": cfg.n_patients, "seed": cfg.seed,
                                     **OmegaConf.to_container(cfg.cohort, resolve=True)}}
        if aggregator == aggregators[0]:
            oracle = compose_stage(name="survival", overrides=[
                f"features={_quoted(cohort / 'oracle.csv')}", f"run_dir={_quoted(first_run)}",
                f"output_dir={_quoted(root / 'oracle')}", *survival_base,
            ])
            jobs.append(Job(**common, generate=generate, oracle=oracle))
        else:
            jobs.append(Job(**common, folds_from=RunFolder(first_run).folds))
    return jobs


def _quoted(path: Path) -> str:
    """A path as a quoted hydra override value (spaces, commas and brackets stay literal)."""
    if "'" in str(path):
        raise ValueError(f"{path}: a path with a single quote cannot be passed to hydra")
    return f"'{path}'"


def family_settings(*, cfg: DictConfig, family: str) -> dict:
    """What the family's cohort depends on, as stored in ``{family}/settings.json``."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return json.loads(json.dumps({"family": family, **{key: resolved[key] for key in SETTINGS_KEYS}}))


def changed_keys(*, old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two nested dicts (added and removed keys too)."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    return sorted(k for k in flat_old.keys() | flat_new.keys()
                  if k not in flat_old or k not in flat_new or flat_old[k] != flat_new[k])


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def stale_work(*, output_dir: Path, jobs: list[Job], settings: dict) -> list[str]:
    """Folders of finished work made with other settings than now: the family's cohort, its runs."""
    stale = []
    path = output_dir / settings["family"] / "settings.json"
    if path.is_file():
        changed = changed_keys(old=json.loads(path.read_text(encoding="utf-8")), new=settings)
        if changed:
            stale.append(f"{path.parent} (cohort: {', '.join(changed)})")
    for job in jobs:
        written = RunFolder(job.run_dir).config
        if written.is_file():
            changed = changed_keys(old=OmegaConf.to_container(OmegaConf.load(written)), new=run_config(job.train))
            if changed:
                stale.append(f"{job.run_dir} (train: {', '.join(changed[:6])}{' ...' if len(changed) > 6 else ''})")
    return stale


def _context():
    """Forked workers on Linux: they inherit the imported stack (torch, torch_geometric,
    scikit-survival), which a spawned worker takes seconds to import. The parent has run no
    torch computation, and each worker uses one thread, as torch's DataLoader workers do."""
    return get_context("fork" if sys.platform.startswith("linux") else "spawn")


def init_worker() -> None:
    """One torch and one BLAS/OpenMP thread per worker: the pool, not threads, shares the cores."""
    torch.set_num_threads(1)
    threadpool_limits(limits=1)


def run_job(*, job: Job) -> JobResult:
    """Cohort (first job), folds, training, survival, oracle (first job); output appended to ``RUN/job.log``."""
    result = JobResult()
    job.run_dir.mkdir(parents=True, exist_ok=True)
    with open(job.run_dir / "job.log", "a", encoding="utf-8") as log, redirect_stdout(log), redirect_stderr(log):
        try:
            if job.first:
                _step(result, "cohort", lambda: _write_cohort(job))
            else:
                _share_folds(job)
            trained = _step(result, "train", lambda: _train(job, result))
            _step(result, "survival", lambda: _survival(job.survival, result, rerun=trained))
            if job.oracle is not None:
                _step(result, "oracle", lambda: _survival(job.oracle, result, rerun=False))
        except BaseException:
            traceback.print_exc()
            raise
    return result


def _step(result: JobResult, name: str, run: Callable[[], bool]) -> bool:
    """Run one part of a job; it returns whether it did anything (False: finished before)."""
    start = perf_counter()
    ran = run()
    if ran:
        result.seconds[name] = perf_counter() - start
    else:
        result.skipped.append(name)
    return ran


def _write_cohort(job: Job) -> bool:
    if (job.cohort / "manifest.csv").is_file():
        return False
    job.generate(job.cohort, family=job.family, **job.generator_args)
    return True


def _share_folds(job: Job) -> None:
    """Copy the first run's ``folds.csv`` into this run (or check that the one there is the same)."""
    target = RunFolder(job.run_dir).folds
    folds = job.folds_from.read_text(encoding="utf-8")
    if not target.is_file():
        atomic_write_text(folds, target)
    elif target.read_text(encoding="utf-8") != folds:
        raise ValueError(f"{target} differs from {job.folds_from}: delete {job.run_dir} to retrain it on the "
                         "family's folds")


def _train(job: Job, result: JobResult) -> bool:
    run = RunFolder(job.run_dir)
    if run.folds.is_file():
        ks = pd.read_csv(run.folds)["fold"].unique()
        if all(run.vectors(k).is_file() for k in ks):
            return False
    with run_record("train", job.train, job.run_dir):
        summary = run_training(job.train)
    print(summary.report())
    result.notes += [f"case {case_id} left out of training: {reason}" for case_id, reason in summary.failed]
    return True


def _survival(cfg: DictConfig, result: JobResult, *, rerun: bool) -> bool:
    out = output_dir_for(cfg)
    written = SurvivalFolder(out).settings
    if not rerun and written.is_file():
        # the stage records its config unresolved
        if not changed_keys(old=json.loads(written.read_text(encoding="utf-8"))["config"],
                            new=json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=False)))):
            return False
    with run_record("survival", cfg, out) as record:
        outcome, summary, _ = run_survival(cfg)
        for error in outcome.errors:
            record.note(f"failed: {error}")
    print(format_summary(summary))
    result.notes += [f"{out.name}: {error}" for error in outcome.errors]
    return True


def run_benchmark(*, cfg: DictConfig, generate: Callable, families: tuple[str, ...]) -> Outcome:
    """Every family's cohort, runs and oracle in a process pool, then the scores and ``table.{csv,md}``.

    ``generate`` writes one cohort (``write_planted_cohort``); ``families`` are the names it
    knows. A failed job is reported by name and the others go on; the later jobs of a family
    whose first job failed are not run.
    """
    start = perf_counter()
    chosen, aggregators = check_config(cfg=cfg, families=families)
    output_dir = Path(cfg.output_dir).resolve()
    plans = {family: plan_family(cfg=cfg, family=family, aggregators=aggregators, output_dir=output_dir,
                                 generate=generate) for family in chosen}
    settings = {family: family_settings(cfg=cfg, family=family) for family in chosen}
    stale = [folder for family in chosen
             for folder in stale_work(output_dir=output_dir, jobs=plans[family], settings=settings[family])]
    if stale:
        raise ValueError("finished work in output_dir was made with other settings than now; delete these "
                         f"folders (or choose another output_dir) to redo them: {'; '.join(stale)}")
    for family in chosen:
        atomic_write_text(json.dumps(settings[family], indent=2) + "\n", output_dir / family / "settings.json")

    total = sum(len(jobs) for jobs in plans.values())
    print(f"validate: {len(chosen)} families x {len(aggregators)} aggregators = {total} runs "
          f"in {cfg.jobs} worker(s), output in {output_dir}", flush=True)
    failed, finished = {}, 0
    with ProcessPoolExecutor(max_workers=cfg.jobs, mp_context=_context(), initializer=init_worker) as pool:
        pending: dict[Future, Job] = {pool.submit(run_job, job=jobs[0]): jobs[0] for jobs in plans.values()}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                finished += 1
                error = future.exception()
                if error is None:
                    result = future.result()
                    active().timing(job.name, sum(result.seconds.values()))
                    print(f"[{finished}/{total}] {job.name}: {result.describe()}", flush=True)
                    for note in result.notes:
                        print(f"    note: {note}", flush=True)
                    if job.first:
                        pending.update({pool.submit(run_job, job=later): later for later in plans[job.family][1:]})
                    continue
                failed[job.name] = f"{type(error).__name__}: {error} (see {job.run_dir / 'job.log'})"
                print(f"[{finished}/{total}] FAILED {job.name}: {failed[job.name]}", flush=True)
                if job.first:
                    for later in plans[job.family][1:]:
                        finished += 1
                        failed[later.name] = f"not run: the first run of {job.family} ({job.name}) failed"
                        print(f"[{finished}/{total}] FAILED {later.name}: {failed[later.name]}", flush=True)

    rows = []
    for family, jobs in plans.items():
        for job in jobs:
            if job.name in failed:
                continue
            try:
                rows.append(scores.run_scores(family=family, aggregator=job.aggregator, run_dir=job.run_dir,
                                              manifest=job.cohort / "manifest.csv", truth_dir=job.cohort / "truth"))
                if job.oracle is not None:
                    rows.append(scores.oracle_scores(family=family, survival_dir=output_dir_for(job.oracle)))
            except Exception as error:  # noqa: BLE001 - one unreadable run must not hide the others' scores
                failed[job.name] = f"scoring failed: {type(error).__name__}: {error}"
                print(f"FAILED {job.name}: {failed[job.name]}", flush=True)
    fold_rows = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=scores.FOLD_COLUMNS)
    table = scores.write_tables(fold_rows=fold_rows, output_dir=output_dir, families=chosen, aggregators=aggregators)
    for name, reason in failed.items():
        active().note(f"failed: {name}: {reason}")
    return Outcome(table=table, failed=[f"{name}: {reason}" for name, reason in failed.items()],
                   seconds=perf_counter() - start)
