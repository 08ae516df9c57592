"""``python -m radiopath.demo``: write the built-in synthetic demo cohort.

Writes ``{output_dir}/manifest.csv`` with CT volumes, tumour masks, slides and the
planted ground truth beside it (see :mod:`radiopath.data.demo_cohort` for the
generative model). The same seed gives the same cohort.

Examples::

    python -m radiopath.demo output_dir=data/demo
    python -m radiopath.demo output_dir=/tmp/demo n_patients=100 seed=1 survival.b_ct=1.0
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from radiopath.data.demo_cohort import RUN_KEYS, describe_cohort, make_demo_cohort


@hydra.main(version_base="1.3", config_path="conf", config_name="demo")
def main(cfg: DictConfig) -> None:
    """Generate the cohort described by ``conf/demo.yaml`` and print a summary."""
    params = {key: value for key, value in OmegaConf.to_container(cfg, resolve=True).items() if key not in RUN_KEYS}
    manifest = make_demo_cohort(cfg.output_dir, cfg.n_patients, cfg.seed, progress=True, **params)
    print(describe_cohort(manifest, cfg.time_unit))


if __name__ == "__main__":
    main()
