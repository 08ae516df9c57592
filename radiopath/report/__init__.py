"""The comparison report of training runs: Table 1, metric and KM figures, training curves, importance overlays."""

from radiopath.report.stage import build_report

__all__ = ["build_report"]
