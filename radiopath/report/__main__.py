"""``python -m radiopath.report``: one HTML page comparing training runs and their survival benchmarks.

Examples::

    python -m radiopath.report output=reports/demo \\
        run_dirs=[runs/demo/radiopathomics_mean,runs/demo/radiopathomics_abmil,runs/demo/radiopathomics_sparra]
    python -m radiopath.report run_dirs=[runs/a,runs/b] output=reports/ab embed_images=true overlays.n_cases=5
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from radiopath import config  # noqa: F401  (registers the ${dirname:} resolver used by run configs)
from radiopath.report.build import build_report
from radiopath.repro import RECORD_NAME, run_record


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    with run_record("report", cfg, cfg.output) as record:
        for run_dir in cfg.run_dirs:
            record.input(Path(run_dir) / RECORD_NAME, "training run record")
        path = build_report(cfg)
    print(f"report in {path.resolve()}")


if __name__ == "__main__":
    main()
