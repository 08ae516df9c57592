"""``python -m radiopath.survival``: survival models benchmarked by cross-validation.

Examples::

    python -m radiopath.survival run_dir=runs/sparra                      # a training run's patient vectors
    python -m radiopath.survival run_dir=runs/sparra selection.univariate_cox=false
    python -m radiopath.survival features=clinical.csv                    # a feature table, new folds
    python -m radiopath.survival features=clinical.csv run_dir=runs/sparra  # ... on the run's folds
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from radiopath import config  # noqa: F401  (registers the ${dirname:} resolver)
from radiopath.survival.benchmark import format_summary
from radiopath.repro import run_record
from radiopath.survival.stage import output_dir_for, run_stage


@hydra.main(version_base="1.3", config_path="../conf", config_name="survival")
def main(cfg: DictConfig) -> None:
    with run_record("survival", cfg, output_dir_for(cfg)) as record:
        result, summary, output_dir = run_stage(cfg)
        for error in result.errors:
            record.note(f"failed: {error}")
    print(format_summary(summary))
    for error in result.errors:
        print(f"FAILED {error}")
    print(f"survival benchmark in {output_dir.resolve()}")
    if result.errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
