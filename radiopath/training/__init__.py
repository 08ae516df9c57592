"""Cross-validated training of graph aggregators (``python -m radiopath.train``)."""

from radiopath.training.cohort import GraphCohort, Patient, load_graph_cohort
from radiopath.training.folds import load_or_make_folds

__all__ = ["GraphCohort", "Patient", "load_graph_cohort", "load_or_make_folds"]
