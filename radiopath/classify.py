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
from radiopath.classification.parallel import limited_threads
from radiopath.classification.stage import run_stage
from radiopath.repro import run_record


@hydra.main(version_base="1.3", config_path="conf", config_name="classify")
def main(cfg: DictConfig) -> None:
    """Evaluate ``cfg.pipelines`` on ``cfg.task`` and write tables, figures and report.html."""
    with run_record("classify", cfg, cfg.output_dir) as record, limited_threads(cfg.threads):
        task, evaluation, out = run_stage(cfg)
        record.input(cfg.data.manifest, "cohort manifest")
        record.input(out / "splits.csv", "splits")
        record.dataset(task=task.name, cases=len(task.y), positives=int(task.y.sum()),
                       excluded=len(task.excluded))
        for pipeline, error in evaluation.failures:
            record.note(f"pipeline {pipeline} failed: {error}")
    for pipeline, error in evaluation.failures:
        print(f"FAILED {pipeline}: {error}")
    print(f"classification results in {out.resolve()} (report.html)")
    if evaluation.failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
