"""``python -m radiopath.demo``: write the built-in synthetic demo cohort (:mod:`radiopath.data.stage`).

Writes ``{output_dir}/manifest.csv`` with CT volumes, tumour masks, slides and the
planted ground truth beside it (see :mod:`radiopath.data.demo_cohort` for the
generative model). The same seed gives the same cohort.

Examples::

    python -m radiopath.demo output_dir=data/demo
    python -m radiopath.demo output_dir=/tmp/demo n_patients=100 seed=1 survival.b_ct=1.0
"""

import hydra
from omegaconf import DictConfig

from radiopath.data.stage import run
from radiopath.entry import run_entry


@hydra.main(version_base="1.3", config_path="conf", config_name="demo")
def main(cfg: DictConfig) -> None:
    run_entry("demo", cfg, run, output_dir=cfg.output_dir)


if __name__ == "__main__":
    main()
