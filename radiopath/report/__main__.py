"""``python -m radiopath.report``: one HTML page comparing training runs and their survival benchmarks.

Examples::

    python -m radiopath.report output=reports/demo \\
        run_dirs=[runs/demo/radiopathomics_mean,runs/demo/radiopathomics_abmil,runs/demo/radiopathomics_sparra]
    python -m radiopath.report run_dirs=[runs/a,runs/b] output=reports/ab embed_images=true overlays.n_cases=5
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from radiopath import config  # noqa: F401  (registers the ${dirname:} resolver used by run configs)
from radiopath.report.build import build_report


@hydra.main(version_base="1.3", config_path="../../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    path = build_report(cfg)
    print(f"report in {path.resolve()}")


if __name__ == "__main__":
    main()
