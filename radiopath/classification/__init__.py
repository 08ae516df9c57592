"""CT classification pipelines of the companion papers (``python -m radiopath.classify``).

Tasks: benign vs malignant, low vs high ISUP grade, indolent vs aggressive. Every
pipeline is a :class:`CasePipeline` registered by name; the evaluation (splits,
metrics, DeLong, calibration, report) treats them all alike.
"""

from radiopath.classification.base import PIPELINES, CasePipeline

__all__ = ["PIPELINES", "CasePipeline"]
