"""``python -m radiopath.build_graphs``: one graph per case and modality (:mod:`radiopath.graphs.stage`).

Encodes the cases whose patch features are missing first.

Examples::

    python -m radiopath.build_graphs data.manifest=data/demo/manifest.csv output_dir=graphs/demo
    # a cohort split into 8 SLURM jobs (radiopath/conf/hydra/launcher/slurm.yaml),
    # or into 4 local processes (local_parallel.yaml):
    python -m radiopath.build_graphs -m hydra/launcher=slurm num_shards=8 shard='range(8)'
    python -m radiopath.build_graphs -m hydra/launcher=local_parallel num_shards=4 shard='range(4)'
"""

import hydra
from omegaconf import DictConfig

from radiopath.entry import run_entry
from radiopath.graphs.stage import run
from radiopath.layout import RECORD_NAME, part_filename


@hydra.main(version_base="1.3", config_path="conf", config_name="build_graphs")
def main(cfg: DictConfig) -> None:
    run_entry("build_graphs", cfg, run, output_dir=cfg.output_dir,
              record_name=part_filename(RECORD_NAME, shard=cfg.shard, num_shards=cfg.num_shards))


if __name__ == "__main__":
    main()
