"""CT classification pipelines of the companion papers (``python -m radiopath.classify``).

Tasks: benign vs malignant, low vs high ISUP grade, indolent vs aggressive. Every
pipeline is a :class:`CasePipeline` registered by name; the evaluation (splits,
metrics, DeLong, calibration, report) treats them all alike.
"""

from radiopath.classification.base import CasePipeline, build_pipeline, list_pipelines, register_pipeline

__all__ = ["CasePipeline", "build_pipeline", "list_pipelines", "register_pipeline"]
