"""``python -m radiopath.encode``: patch features for every case and modality (:mod:`radiopath.encoders.stage`).

Examples::

    python -m radiopath.encode data.manifest=data/demo/manifest.csv
    python -m radiopath.encode data.manifest=/cohort/manifest.csv \\
        encoder/pathology=uni encoder.pathology.checkpoint=/models/uni/pytorch_model.bin
"""

import hydra
from omegaconf import DictConfig

from radiopath.encoders.stage import run
from radiopath.entry import run_entry
from radiopath.layout import RECORD_NAME, part_filename


@hydra.main(version_base="1.3", config_path="conf", config_name="encode")
def main(cfg: DictConfig) -> None:
    run_entry("encode", cfg, run, output_dir=cfg.data.features_dir,
              record_name=part_filename(RECORD_NAME, shard=cfg.shard, num_shards=cfg.num_shards))


if __name__ == "__main__":
    main()
