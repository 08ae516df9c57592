import pandas as pd
import pytest

from radiopath.errors import CaseError
from radiopath.io import atomic_write, atomic_write_text
from radiopath.runner import run_cases


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text("old", target)
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as handle:
            handle.write("half of the new")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_run_cases_goes_on_after_failures_and_skips_finished_cases(tmp_path):
    done = {"a"}
    processed = []

    def process(case_id):
        if case_id == "b":
            raise CaseError(case_id, "mask is empty")
        if case_id == "c":
            raise ValueError("unexpected")
        processed.append(case_id)

    summary = run_cases("test", ["a", "b", "c", "d"], process, is_done=lambda c: c in done)
    assert processed == ["d"]
    assert summary.skipped == ["a"] and summary.done == ["d"]
    assert summary.failed == [("b", "mask is empty"), ("c", "ValueError: unexpected")]
    assert not summary.ok
    assert "FAILED b: mask is empty" in summary.report()

    summary.write_failures(tmp_path / "failures.csv")
    table = pd.read_csv(tmp_path / "failures.csv")
    assert table["case_id"].tolist() == ["b", "c"]


def test_overwrite_redoes_finished_cases():
    processed = []
    summary = run_cases("test", ["a"], processed.append, is_done=lambda c: True, overwrite=True)
    assert processed == ["a"] and summary.done == ["a"]
