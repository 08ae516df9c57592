"""The demo stage: write the built-in synthetic demo cohort (:mod:`radiopath.data.demo_cohort`)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from radiopath.data.demo_cohort import RUN_KEYS, describe_cohort, make_demo_cohort
from radiopath.entry import StageResult


def run(cfg: DictConfig) -> StageResult:
    """Generate the cohort described by ``cfg`` (``conf/demo.yaml``); the result names its manifest."""
    params = {key: value for key, value in OmegaConf.to_container(cfg, resolve=True).items() if key not in RUN_KEYS}
    manifest = make_demo_cohort(cfg.output_dir, cfg.n_patients, cfg.seed, progress=True, **params)
    return StageResult(manifest, "demo cohort manifest", lines=[describe_cohort(manifest, cfg.time_unit)])
