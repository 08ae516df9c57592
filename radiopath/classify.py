"""``python -m radiopath.classify``: CT classification pipelines compared on one task (:mod:`radiopath.classification.stage`).

Examples::

    python -m radiopath.classify experiment_classify=malignancy_tr data.manifest=data/demo_classify/manifest.csv
    python -m radiopath.classify experiment_classify=grade_tr evaluation.n_boot=2000 output_dir=runs/grade
"""

import hydra
from omegaconf import DictConfig

from radiopath.classification.stage import run
from radiopath.entry import run_entry


@hydra.main(version_base="1.3", config_path="conf", config_name="classify")
def main(cfg: DictConfig) -> None:
    run_entry("classify", cfg, run, output_dir=cfg.output_dir)


if __name__ == "__main__":
    main()
