"""Survival benchmark: feature selection, RSF / CoxPH / Coxnet / FSVM with inner-CV grids, metrics, KM risk groups."""

from radiopath.survival.benchmark import BenchmarkResult, run_benchmark, summarise
from radiopath.survival.data import SurvivalFold, folds_from_run, folds_from_table, stratified_folds
from radiopath.survival.selection import NearConstantFilter, UnivariateCoxSelector

__all__ = [
    "BenchmarkResult",
    "NearConstantFilter",
    "SurvivalFold",
    "UnivariateCoxSelector",
    "folds_from_run",
    "folds_from_table",
    "run_benchmark",
    "stratified_folds",
    "summarise",
]
