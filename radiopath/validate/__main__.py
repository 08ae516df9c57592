"""``python -m radiopath.validate``: the method-validation benchmark on planted-signal cohorts (:mod:`radiopath.validate.stage`).

Examples::

    python -m radiopath.validate                                    # six families, Mean/ABMIL/SPARRA
    python -m radiopath.validate families=[shift,null] n_patients=60 output_dir=runs/validate_small
    python -m radiopath.validate "train_overrides=['training.epochs=5']" jobs=1
"""

import hydra
from omegaconf import DictConfig

from radiopath.entry import run_entry
from radiopath.validate.stage import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="validate")
def main(cfg: DictConfig) -> None:
    run_entry("validate", cfg, run, output_dir=cfg.output_dir)


if __name__ == "__main__":
    main()
