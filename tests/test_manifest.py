from pathlib import Path

import pandas as pd
import pytest

from radiopath.data.manifest import load_manifest
from radiopath.errors import ManifestError


def write_manifest(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_paths_resolve_relative_to_manifest(tmp_path):
    (tmp_path / "ct").mkdir()
    (tmp_path / "ct" / "a.nii.gz").write_bytes(b"x")
    path = write_manifest(tmp_path, [{"case_id": "a", "ct": "ct/a.nii.gz", "os_time": 10, "os_event": 1}])
    manifest = load_manifest(path)
    assert manifest.problems == []
    assert manifest.image_path("a", "ct") == (tmp_path / "ct" / "a.nii.gz").resolve()


def test_duplicated_ids_are_reported_and_left_out(tmp_path):
    path = write_manifest(
        tmp_path,
        [{"case_id": "a", "os_time": 1}, {"case_id": "a", "os_time": 2}, {"case_id": "b", "os_time": 3}],
    )
    manifest = load_manifest(path)
    assert manifest.case_ids == ["b"]
    assert [(p.case_id, "2 times" in p.reason) for p in manifest.problems] == [("a", True)]


@pytest.mark.parametrize(
    "row, fragment",
    [
        ({"os_time": -3, "os_event": 1}, "os_time must be a positive number"),
        ({"os_time": 0, "os_event": 1}, "os_time must be a positive number"),
        ({"os_time": 5, "os_event": 2}, "os_event must be 0 or 1"),
        ({"os_time": 5, "ct": "missing.nii.gz"}, "ct file not found"),
    ],
)
def test_bad_rows_name_the_case_and_the_problem(tmp_path, row, fragment):
    path = write_manifest(tmp_path, [{"case_id": "bad", **row}, {"case_id": "good", "os_time": 4, "os_event": 0}])
    manifest = load_manifest(path)
    assert manifest.case_ids == ["good"]
    assert len(manifest.problems) == 1
    assert manifest.problems[0].case_id == "bad"
    assert fragment in manifest.problems[0].reason


def test_missing_required_column_is_a_manifest_error(tmp_path):
    path = write_manifest(tmp_path, [{"case_id": "a"}])
    with pytest.raises(ManifestError, match="missing column"):
        load_manifest(path, required=("wsi",))
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path / "nope.csv")


def test_shards_partition_the_cohort(tmp_path):
    path = write_manifest(tmp_path, [{"case_id": f"c{i}"} for i in range(7)])
    manifest = load_manifest(path)
    shards = [manifest.select_shard(i, 3).case_ids for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(manifest.case_ids)
    assert all(set(a).isdisjoint(b) for i, a in enumerate(shards) for b in shards[i + 1 :])


def test_phase_columns_are_paths_relative_to_the_manifest(tmp_path):
    (tmp_path / "ct").mkdir()
    (tmp_path / "ct" / "p_late.nii.gz").write_bytes(b"")
    pd.DataFrame([{"case_id": "p", "phase_late": "ct/p_late.nii.gz"},
                  {"case_id": "q", "phase_late": "ct/missing.nii.gz"}]).to_csv(tmp_path / "manifest.csv", index=False)
    manifest = load_manifest(tmp_path / "manifest.csv")
    assert manifest.frame["phase_late"].tolist() == [str(tmp_path / "ct" / "p_late.nii.gz")]
    assert "phase_late file not found" in str(manifest.problems[0])
