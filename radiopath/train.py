"""``python -m radiopath.train``: cross-validated training of a graph aggregator (:mod:`radiopath.training.stage`).

Examples::

    python -m radiopath.train experiment=radiopathomics_sparra
    python -m radiopath.train data.manifest=/cohort/manifest.csv data.graph_dir=graphs/cohort \\
        model=abmil modalities=[pathology] output_dir=runs/cohort/pathomics_abmil training.epochs=50
    python -m radiopath.train -m hydra/launcher=slurm fold='range(5)'    # one SLURM job per fold
    python -m radiopath.train tune.enabled=true \\
        tune.grid='{training.lr:[3e-4,1e-3],model.kwargs.ratio:[0.2,0.5]}'
"""

import hydra
from omegaconf import DictConfig

from radiopath.entry import run_entry
from radiopath.training.stage import record_name, run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    run_entry("train", cfg, run, output_dir=cfg.output_dir, record_name=record_name(cfg))


if __name__ == "__main__":
    main()
