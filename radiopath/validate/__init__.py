"""Method validation (``python -m radiopath.validate``): planted-signal graph cohorts through train → survival.

``planted.py`` writes the cohorts, ``benchmark.py`` runs Mean, ABMIL and SPARRA on them
through the real stages, ``scores.py`` scores the runs against the planted truth and
writes the table.
"""
