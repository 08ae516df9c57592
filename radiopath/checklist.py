"""``python -m radiopath.checklist``: which reproducibility-checklist items the run records answer.

See :mod:`radiopath.report.checklist`. The command only reads: it writes no record of its own.

Examples::

    python -m radiopath.checklist run_dirs=[runs/demo/radiopathomics_sparra]
    python -m radiopath.checklist run_dirs=[runs/demo/radiopathomics_sparra,graphs/demo] json=true
"""

import hydra
from omegaconf import DictConfig

from radiopath.entry import run_entry
from radiopath.report.checklist import run


@hydra.main(version_base="1.3", config_path="conf", config_name="checklist")
def main(cfg: DictConfig) -> None:
    run_entry("checklist", cfg, run, output_dir=None)


if __name__ == "__main__":
    main()
