"""``python -m radiopath.report``: one HTML page comparing training runs and their survival benchmarks.

See :mod:`radiopath.report.stage`. Examples::

    python -m radiopath.report output=reports/demo \\
        run_dirs=[runs/demo/radiopathomics_mean,runs/demo/radiopathomics_abmil,runs/demo/radiopathomics_sparra]
    python -m radiopath.report run_dirs=[runs/a,runs/b] output=reports/ab embed_images=true overlays.n_cases=5
"""

import hydra
from omegaconf import DictConfig

from radiopath.entry import run_entry
from radiopath.report.stage import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    run_entry("report", cfg, run, output_dir=cfg.output)


if __name__ == "__main__":
    main()
