"""``python -m radiopath.export``: node importance as QuPath GeoJSON tiles, NIfTI maps on the CT and PNG previews.

See :mod:`radiopath.report.export`. Examples::

    python -m radiopath.export run_dir=runs/demo/radiopathomics_sparra          # -> RUN/export/fold{k}/{case_id}/
    python -m radiopath.export run_dir=runs/demo/radiopathomics_sparra output=overlays/sparra cases=[demo-003]
"""

import hydra
from omegaconf import DictConfig

from radiopath.entry import run_entry
from radiopath.report.export import run


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run_entry("export", cfg, run, output_dir=cfg.output)


if __name__ == "__main__":
    main()
