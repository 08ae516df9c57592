"""Classification tasks drawn from the cohort manifest.

A task names a label column, the population it applies to and the cases that are
negatives whatever their label (``conf/classify/task/``): malignancy on every case, grade
on malignant cases only, aggressiveness on every case with benign tumours counted as
indolent (``aggressiveness_malignant``: malignant cases only). A case of the population
without a usable label is excluded *and listed*, never dropped silently; so are the rows
the manifest itself rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from radiopath.data.manifest import load_manifest
from radiopath.errors import ManifestError


@dataclass
class TaskData:
    """The cases of one task, their 0/1 labels, and the cases left out with the reason."""

    name: str
    label: str
    cases: pd.DataFrame
    y: np.ndarray
    excluded: pd.DataFrame  # case_id, reason
    n_outside: int  # cases outside the task's population (e.g. benign for grade)

    def summary(self) -> str:
        """One line: counts per class, exclusions and cases outside the population."""
        positives = int(self.y.sum())
        line = (
            f"task {self.name} (y = {self.label}): {len(self.y)} cases, {positives} positive, "
            f"{len(self.y) - positives} negative; {self.n_outside} outside the population"
        )
        if len(self.excluded):
            ids = ", ".join(self.excluded["case_id"].astype(str))
            line += f"; {len(self.excluded)} excluded: {ids}"
        return line


def load_task(
    manifest_path: str | Path, name: str, label: str, population: Mapping[str, object], allow_outside: bool = False,
    *, negatives: Mapping[str, object],
) -> TaskData:
    """Cases of task ``name``: manifest rows matching ``population`` (column -> value), labelled by ``label``.

    A case matching every ``negatives`` entry (column -> value; none if empty) is negative
    whatever its label (a benign tumour is indolent). Otherwise a label must be 0 or 1; an
    empty one excludes the case (listed in ``excluded``), any other value is an error naming
    the case. Rows the manifest rejected are listed too. ``allow_outside`` lets image paths
    lead outside the manifest's folder.
    """
    manifest = load_manifest(manifest_path, required=(label, *population, *negatives), allow_outside=allow_outside)
    frame = manifest.frame
    excluded = [(problem.case_id, f"manifest: {problem.reason}") for problem in manifest.problems]

    inside = pd.Series(True, index=frame.index)
    for column, value in population.items():
        values = pd.to_numeric(frame[column], errors="coerce")
        # A case whose membership is unknown is excluded and listed, not counted as outside.
        excluded += [(case_id, f"no {column} value") for case_id in frame.loc[inside & values.isna(), "case_id"]]
        inside &= values.isna() | (values == value)
    unknown = frame["case_id"].isin([case_id for case_id, _ in excluded])
    n_outside = int((~inside).sum())
    frame = frame.loc[inside & ~unknown].reset_index(drop=True)

    values = pd.to_numeric(frame[label], errors="coerce")
    if negatives:
        negative = pd.Series(True, index=frame.index)
        for column, value in negatives.items():
            negative &= pd.to_numeric(frame[column], errors="coerce") == value
        values = values.mask(negative, 0)
    for case_id, raw, value in zip(frame["case_id"], frame[label], values):
        if not pd.isna(raw) and value not in (0, 1):
            raise ManifestError(f"{manifest.path}: case {case_id!r}: {label} must be 0 or 1, got {raw!r}")
    missing = values.isna()
    excluded += [(case_id, f"no {label} label") for case_id in frame.loc[missing, "case_id"]]

    return TaskData(
        name=name,
        label=label,
        cases=frame.loc[~missing].reset_index(drop=True),
        y=values[~missing].to_numpy(dtype=int),
        excluded=pd.DataFrame(excluded, columns=["case_id", "reason"]),
        n_outside=n_outside,
    )
