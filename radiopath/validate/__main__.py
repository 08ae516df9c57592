"""``python -m radiopath.validate``: the method-validation benchmark on planted-signal cohorts.

Examples::

    python -m radiopath.validate                                    # six families, Mean/ABMIL/SPARRA
    python -m radiopath.validate families=[shift,null] n_patients=60 output_dir=runs/validate_small
    python -m radiopath.validate "train_overrides=['training.epochs=5']" jobs=1
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from radiopath.repro import run_record
from radiopath.validate.benchmark import run_benchmark
from radiopath.validate.planted import FAMILIES, write_planted_cohort


@hydra.main(version_base="1.3", config_path="../conf", config_name="validate")
def main(cfg: DictConfig) -> None:
    """Run the benchmark of ``conf/validate.yaml``; print the table and the total wall time."""
    with run_record("validate", cfg, cfg.output_dir):
        outcome = run_benchmark(cfg=cfg, generate=write_planted_cohort, families=FAMILIES)
    print(outcome.table)
    for failure in outcome.failed:
        print(f"FAILED {failure}")
    output_dir = Path(cfg.output_dir).resolve()
    print(f"table in {output_dir / 'table.md'} and {output_dir / 'table.csv'}; "
          f"total wall time {outcome.seconds:.0f} s ({outcome.seconds / 60:.1f} min)")
    if outcome.failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
