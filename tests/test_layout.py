"""The on-disk layout: what writers put where is what the readers (survival, report, validate) look for."""

import numpy as np
import pandas as pd
import pytest

from radiopath.layout import (RunFolder, SurvivalFolder, features_path, fold_of, graph_path, is_vector_column,
                              vector_columns)
from radiopath.report.runs import load_run
from radiopath.survival.data import folds_from_run, read_survival, stratified_folds
from radiopath.folds import make_folds


def test_feature_and_graph_paths():
    assert features_path("F", "pathology", "timm:vit_small", "c1").as_posix() == "F/pathology/timm-vit_small/c1.pt"
    assert graph_path("G", "radiology", "c1").as_posix() == "G/radiology/c1.pt"


def test_vector_columns_are_recognised_and_nothing_else():
    assert vector_columns(3) == ["v0", "v1", "v2"]
    assert all(is_vector_column(name) for name in vector_columns(12))
    assert not any(is_vector_column(name) for name in ("risk", "split", "case_id", "v", "vx", "v1a", "version"))


def test_fold_folders_sort_by_number_and_ignore_look_alikes(tmp_path):
    run = RunFolder(tmp_path)
    for k in (10, 2, 0):
        run.fold(k).mkdir()
    (tmp_path / "fold").mkdir()
    (tmp_path / "fold3").write_text("a file, not a fold folder")
    assert [k for k, _ in run.fold_dirs()] == [0, 2, 10]
    assert RunFolder(tmp_path / "absent").fold_dirs() == []


def test_importance_files_skip_leftovers_of_interrupted_writes(tmp_path):
    run = RunFolder(tmp_path)
    for k, case_id in ((0, "a"), (1, "b")):
        run.importance(k, case_id).parent.mkdir(parents=True)
        run.importance(k, case_id).write_bytes(b"")
    (run.fold(1) / "importance" / ".tmp-1x2y-c.pt").write_bytes(b"")
    files = run.importance_files()
    assert files == {"a": run.importance(0, "a"), "b": run.importance(1, "b")}
    assert [fold_of(path) for path in files.values()] == [0, 1]
    with pytest.raises(ValueError, match="not inside a fold"):
        fold_of(tmp_path / "importance" / "a.pt")


def write_run(root, n_cases=6, width=3):
    """A two-fold run as training lays it out: folds.csv and each fold's vectors.csv and history.csv."""
    run = RunFolder(root)
    run.root.mkdir(parents=True, exist_ok=True)
    ids = [f"c{i}" for i in range(n_cases)]
    folds = pd.DataFrame({"case_id": ids, "fold": [i % 2 for i in range(n_cases)]})
    folds.to_csv(run.folds, index=False)
    rng = np.random.default_rng(0)
    for k in (0, 1):
        run.fold(k).mkdir()
        vectors = pd.DataFrame({"case_id": ids, "split": np.where(folds["fold"] == k, "test", "train"),
                                "risk": rng.normal(size=n_cases)})
        vectors[vector_columns(width)] = rng.normal(size=(n_cases, width))
        vectors.to_csv(run.vectors(k), index=False)
        pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5]}).to_csv(run.history(k), index=False)
    manifest = root / "manifest.csv"
    pd.DataFrame({"case_id": ids, "os_time": np.arange(1.0, n_cases + 1), "os_event": 1}).to_csv(manifest,
                                                                                                index=False)
    return run, manifest


def test_survival_reads_the_vector_columns_of_each_fold(tmp_path):
    run, manifest = write_run(tmp_path / "run")
    folds = folds_from_run(run.root, read_survival(manifest))
    assert [fold.fold for fold in folds] == [0, 1]
    assert list(folds[0].X_train.columns) == vector_columns(3)  # not risk, not split
    assert sorted(folds[1].ids_test) == ["c1", "c3", "c5"]


def test_report_reads_a_run_and_names_what_is_missing(tmp_path):
    run, _ = write_run(tmp_path / "run")
    loaded = load_run(run.root, "survival", {})
    assert sorted(loaded.histories) == [0, 1] and loaded.n_folds == 2
    assert loaded.survival is None and any(str(run.survival) in note for note in loaded.notes)
    assert "no config.yaml: training settings, images and graphs unknown" in loaded.notes


def test_report_reads_the_survival_folder(tmp_path):
    run, _ = write_run(tmp_path / "run")
    files = SurvivalFolder(run.survival)
    files.root.mkdir()
    pd.DataFrame({"fold": [0], "model": ["CoxPH"], "metric": ["c_index"], "value": [0.7], "note": [None]}).to_csv(
        files.metrics, index=False)
    pd.DataFrame({"model": ["CoxPH"], "metric": ["c_index"], "mean": [0.7], "std": [np.nan], "n_folds": [1]}).to_csv(
        files.summary, index=False)
    loaded = load_run(run.root, "survival", {})
    assert loaded.survival.metrics["value"].tolist() == [0.7]
    assert f"survival output {files.predictions.name} is missing" in loaded.notes


def test_a_feature_table_gets_the_folds_training_makes():
    rng = np.random.default_rng(1)
    ids = [f"p{i}" for i in range(40)]
    events = rng.integers(0, 2, size=40)
    table = pd.DataFrame({"os_time": 1.0, "os_event": events}, index=pd.Index(ids, name="case_id"))
    folds = stratified_folds(table, n_folds=5, seed=3)
    expected = make_folds(ids, events, n_folds=5, seed=3).set_index("case_id")["fold"]
    assert folds.to_dict() == expected.to_dict()
