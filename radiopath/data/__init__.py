"""Cohort manifests, image readers and the demo cohort generator."""
