"""``python -m radiopath.survival``: survival models benchmarked by cross-validation (:mod:`radiopath.survival.stage`).

Examples::

    python -m radiopath.survival run_dir=runs/sparra                      # a training run's patient vectors
    python -m radiopath.survival run_dir=runs/sparra selection.univariate_cox=false
    python -m radiopath.survival features=clinical.csv                    # a feature table, new folds
    python -m radiopath.survival features=clinical.csv run_dir=runs/sparra  # ... on the run's folds
"""

import hydra
from omegaconf import DictConfig

from radiopath.entry import run_entry
from radiopath.survival.stage import output_dir_for, run


@hydra.main(version_base="1.3", config_path="../conf", config_name="survival")
def main(cfg: DictConfig) -> None:
    run_entry("survival", cfg, run, output_dir=output_dir_for)


if __name__ == "__main__":
    main()
