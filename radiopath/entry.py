"""What every command does around its stage: run record, failure summary, exit status.

Every ``python -m radiopath.<command>`` has the same shape: a module of a few lines
(``radiopath/<command>.py``, or ``radiopath/<command>/__main__.py`` where the command
is also the stage's package) whose hydra ``main`` calls :func:`run_entry` with the
stage's ``run(cfg) -> StageResult`` from the stage's own ``stage.py``. So a stage is
also a plain function that scripts, tests and the validation benchmark call directly.

Exit status: 0 when every case (fold, pipeline ...) succeeded, 1 when some failed
(the others finished and were written), 2 when the configuration is unusable
(checked before any case is processed; the message names the key).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from radiopath import config  # noqa: F401  (registers the ${dirname:} resolver for every command)
from radiopath.errors import ConfigError
from radiopath.layout import RECORD_NAME
from radiopath.registry import UnknownNameError
from radiopath.repro import run_record
from radiopath.runner import RunSummary


@dataclass
class StageResult:
    """What a stage reports back to its command.

    ``output`` is where its results are and ``what`` names them ("graphs",
    "features" ...; None prints no closing line, so that stdout can be JSON);
    ``lines`` are printed after the run (summaries and tables, which name what
    failed); ``failures`` go into the run record, and any makes the exit status 1.
    """

    output: Path | None
    what: str | None
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @classmethod
    def of_summaries(cls, summaries: list[RunSummary], output: Path, what: str) -> "StageResult":
        """The result of per-case loops: their reports (which list the failed cases) and every failure."""
        failures = [f"{s.stage}: {case_id}: {reason}" for s in summaries for case_id, reason in s.failed]
        return cls(output, what, lines=[s.report() for s in summaries], failures=failures)


def run_entry(stage: str, cfg: DictConfig, run: Callable[[DictConfig], StageResult], *,
              output_dir: str | Path | Callable[[DictConfig], Path] | None, record_name: str = RECORD_NAME) -> None:
    """Run ``run(cfg)`` inside the stage's run record, print its result and exit with its status.

    ``output_dir`` (where the record goes) may be a function of the config, for stages
    whose folder is derived from other keys and can itself be misconfigured; None
    writes no record (a command that only reads).
    """
    try:
        folder = output_dir(cfg) if callable(output_dir) else output_dir
        with run_record(stage, cfg, folder, record_name) as record:
            result = run(cfg)
            for failure in result.failures:
                record.note(f"failed: {failure}")
    except (ConfigError, UnknownNameError) as error:
        print(f"{stage}: configuration error: {error}", file=sys.stderr)
        sys.exit(2)
    for line in result.lines:
        print(line)
    if result.what is not None:
        print(f"{result.what} in {Path(result.output).resolve()}")
    if not result.ok:
        sys.exit(1)  # success returns instead, so that a hydra multirun goes on to its next job
