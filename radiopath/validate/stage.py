"""The validate stage: the method-validation benchmark on planted-signal cohorts (:mod:`radiopath.validate.benchmark`)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from radiopath.entry import StageResult
from radiopath.validate.benchmark import run_benchmark
from radiopath.validate.planted import FAMILIES, write_planted_cohort


def run(cfg: DictConfig) -> StageResult:
    """Every family of ``cfg.families`` x aggregator: write the cohort, train, benchmark, score."""
    outcome = run_benchmark(cfg=cfg, generate=write_planted_cohort, families=FAMILIES)
    output_dir = Path(cfg.output_dir)
    lines = [outcome.table, *(f"FAILED {failure}" for failure in outcome.failed),
             f"table in {output_dir / 'table.md'} and {output_dir / 'table.csv'}; "
             f"total wall time {outcome.seconds:.0f} s ({outcome.seconds / 60:.1f} min)"]
    return StageResult(output_dir, "benchmark", lines=lines, failures=list(outcome.failed))
