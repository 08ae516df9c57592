"""``python -m radiopath.classify``: CT classification pipelines compared on one task.

Examples::

    python -m radiopath.classify experiment_classify=malignancy_tr data.manifest=data/demo_classify/manifest.csv
    python -m radiopath.classify experiment_classify=grade_tr evaluation.n_boot=2000 output_dir=runs/grade
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from radiopath import config  # noqa: F401  (registers the ${dirname:} resolver)
from radiopath.classification.stage import run_stage


@hydra.main(version_base="1.3", config_path="../conf", config_name="classify")
def main(cfg: DictConfig) -> None:
    """Evaluate ``cfg.pipelines`` on ``cfg.task`` and write tables, figures and report.html."""
    _, evaluation, out = run_stage(cfg)
    for pipeline, error in evaluation.failures:
        print(f"FAILED {pipeline}: {error}")
    print(f"classification results in {out.resolve()} (report.html)")
    if evaluation.failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
