"""The comparison report of training runs: Table 1, metric and KM figures, training curves, importance overlays."""

from radiopath.report.build import build_report

__all__ = ["build_report"]
