"""Patient-level cross-validation folds, written once and reused by every aggregator.

``RUN/folds.csv`` (``case_id, fold``) is the contract: the first run of a comparison
writes it, later runs read it, so Mean, ABMIL and SPARRA (and the survival stage)
see exactly the same test patients. It is created once and never overwritten, also
when several fold jobs of one run start at the same time. The folds themselves are
:func:`radiopath.folds.make_folds`.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from radiopath.folds import make_folds
from radiopath.io import TEMP_PREFIX, atomic_write_csv


def load_or_make_folds(path: str | Path, case_ids: list[str], events: np.ndarray, *, n_folds: int,
                       seed: int) -> pd.DataFrame:
    """Read ``folds.csv`` when it exists, else make folds and write them there.

    An existing file must cover exactly ``case_ids``: a cohort that changed since
    the folds were made is an error naming the cases, not a silent re-split.
    Of concurrent callers the first to write wins and all of them read its file.
    """
    path = Path(path)
    if not path.is_file():
        folds = make_folds(case_ids, events, n_folds=n_folds, seed=seed)
        if create_once(folds, path):
            return folds
    folds = pd.read_csv(path, dtype={"case_id": str})
    if set(folds.columns) < {"case_id", "fold"}:
        raise ValueError(f"{path}: needs columns case_id, fold")
    missing = sorted(set(case_ids) - set(folds["case_id"]))
    extra = sorted(set(folds["case_id"]) - set(case_ids))
    if missing or extra:
        raise ValueError(
            f"{path} does not match the cohort: not in the folds {missing[:10]}, not in the cohort {extra[:10]}; "
            "delete the file to make new folds (every aggregator of a comparison must then be retrained)"
        )
    return folds.set_index("case_id").loc[case_ids].reset_index()


def create_once(table: pd.DataFrame, path: Path) -> bool:
    """Write ``table`` to ``path`` unless the file exists; True when this call created it.

    The table is written whole to a temporary file that is then hard-linked to
    ``path``: a link never replaces an existing file, so of several jobs writing at
    once exactly one creates it, and no reader ever sees a partial file.
    """
    staging = path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    atomic_write_csv(table, staging)
    try:
        os.link(staging, path)
    except FileExistsError:
        return False
    finally:
        staging.unlink()
    return True
