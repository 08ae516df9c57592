"""Run one stage over many cases: resume, progress bar, per-case failures, summary.

Every entry point that processes cases one by one uses :func:`run_cases`, so all
of them behave alike: a case whose output already exists is skipped (unless
``overwrite``), a case that raises :class:`~radiopath.errors.CaseError` (or any
other exception) is recorded with its reason while the others go on, and the
summary decides the command's exit status.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
from tqdm.auto import tqdm

from radiopath.errors import CaseError
from radiopath.io import atomic_write_csv

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What happened to each case of a stage."""

    stage: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def add_failures(self, problems: Iterable[CaseError]) -> None:
        """Record problems found before the run (e.g. manifest validation)."""
        self.failed.extend((p.case_id, p.reason) for p in problems)

    def report(self) -> str:
        """A closing summary a person can read."""
        lines = [
            f"{self.stage}: {len(self.done)} done, {len(self.skipped)} skipped (already done), "
            f"{len(self.failed)} failed in {self.seconds:.1f} s"
        ]
        lines += [f"  FAILED {case_id}: {reason}" for case_id, reason in self.failed]
        return "\n".join(lines)

    def write_failures(self, path: str | Path) -> None:
        """Write ``case_id, reason`` of every failure (an empty table when none)."""
        atomic_write_csv(pd.DataFrame(self.failed, columns=["case_id", "reason"]), path)


def run_cases(
    stage: str,
    case_ids: Iterable[str],
    process: Callable[[str], None],
    is_done: Callable[[str], bool],
    overwrite: bool = False,
) -> RunSummary:
    """Call ``process(case_id)`` for every case not yet done; never stop on one bad case."""
    summary = RunSummary(stage)
    start = time.perf_counter()
    case_ids = list(case_ids)
    with tqdm(case_ids, desc=stage, unit="case", dynamic_ncols=True) as bar:
        for case_id in bar:
            bar.set_postfix_str(case_id)
            if not overwrite and is_done(case_id):
                summary.skipped.append(case_id)
                continue
            try:
                process(case_id)
            except CaseError as error:
                summary.failed.append((case_id, error.reason))
                log.error("%s: case %s failed: %s", stage, case_id, error.reason)
            except Exception as error:  # noqa: BLE001 - one bad case must not stop the cohort
                reason = f"{type(error).__name__}: {error}"
                summary.failed.append((case_id, reason))
                log.error("%s: case %s failed: %s\n%s", stage, case_id, reason, traceback.format_exc())
            else:
                summary.done.append(case_id)
    summary.seconds = time.perf_counter() - start
    return summary
