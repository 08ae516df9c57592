"""Graph aggregators (Mean, ABMIL, SPARRA) and their losses.

``AGGREGATORS.create(name, in_dims, **kwargs)`` builds one by name (``.names()`` lists them;
an unknown name is a :class:`~radiopath.registry.UnknownNameError`) and
:func:`check_model_config` checks ``model.name``/``model.kwargs`` before a run loads data.
Every aggregator takes a :class:`PatientBatch` (see :func:`collate_patients`) and returns an
:class:`AggregatorOutput`; :func:`cox_partial_nll` is the survival loss.
"""

from __future__ import annotations

from radiopath.models.abmil import ABMILAggregator
from radiopath.models.base import Aggregator
from radiopath.models.batch import PatientBatch, collate_patients
from radiopath.models.cox import cox_partial_nll
from radiopath.models.mean import MeanAggregator
from radiopath.models.output import AggregatorOutput
from radiopath.models.registry import AGGREGATORS, check_model_config
from radiopath.models.sparra import SPARRAAggregator

__all__ = [
    "AGGREGATORS", "Aggregator", "AggregatorOutput", "ABMILAggregator", "MeanAggregator",
    "PatientBatch", "SPARRAAggregator", "check_model_config", "collate_patients", "cox_partial_nll",
]
