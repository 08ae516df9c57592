"""Graph aggregators (Mean, ABMIL, SPARRA) and their losses.

``build_aggregator(name, in_dims, **kwargs)`` builds one by name; every aggregator takes
a :class:`PatientBatch` (see :func:`collate_patients`) and returns an
:class:`AggregatorOutput`; :func:`cox_partial_nll` is the survival loss.
"""

from __future__ import annotations

from radiopath.models.abmil import ABMILAggregator
from radiopath.models.base import Aggregator
from radiopath.models.batch import PatientBatch, collate_patients
from radiopath.models.cox import cox_partial_nll
from radiopath.models.mean import MeanAggregator
from radiopath.models.output import AggregatorOutput
from radiopath.models.sparra import SPARRAAggregator

AGGREGATORS: dict[str, type[Aggregator]] = {
    "mean": MeanAggregator,
    "abmil": ABMILAggregator,
    "sparra": SPARRAAggregator,
}


def build_aggregator(name: str, in_dims: dict[str, int], **kwargs) -> Aggregator:
    """The aggregator registered as ``name`` ("mean", "abmil", "sparra") for these modalities."""
    if name not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}; choose one of {sorted(AGGREGATORS)}")
    return AGGREGATORS[name](in_dims, **kwargs)


__all__ = [
    "AGGREGATORS", "Aggregator", "AggregatorOutput", "ABMILAggregator", "MeanAggregator",
    "PatientBatch", "SPARRAAggregator", "build_aggregator", "collate_patients", "cox_partial_nll",
]
