"""The fault matrix (README "Faults and bad input"): one test per fault.

The end-to-end rows share one tiny demo cohort with bad rows added, built by
``python -m radiopath.build_graphs`` twice: once SIGKILLed as soon as its first
feature file appears, then to the end. They, and the killed training run, are
marked ``slow``. The other rows call the same code paths in-process.
"""

import errno
import json
import os
import pathlib
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

import radiopath.io
from conftest import SMALL_ENCODERS, TINY_DEMO
from radiopath.graphs.stage import build_modality_graphs
from radiopath.data.demo_cohort import make_demo_cohort
from radiopath.data.manifest import load_manifest
from radiopath.data.pyramid_tiff import write_pyramidal_tiff
from radiopath.encoders.checkpoints import CheckpointError, checkpoint_unpickling, load_state_dict
from radiopath.encoders.features import PatchFeatures
from radiopath.errors import CaseError, ManifestError
from radiopath.graphs import load_graph
from radiopath.layout import graph_path
from radiopath.io import atomic_torch_save, atomic_write_csv, is_temporary
from radiopath.report.runs import load_run
from radiopath.repro import run_record
from radiopath.runner import RunSummary
from radiopath.survival.data import read_survival
from radiopath.survival.stage import run_survival
from radiopath.training.stage import run_training
from radiopath.training.cohort import load_graph_cohort
from test_survival_stage import FAST, fabricate_run
from test_training import toy_cohort

GOOD = 3


def finished_files(root: Path, pattern: str = "*.pt") -> dict[Path, int]:
    """Files a reader would take as outputs (``.tmp-*`` leftovers excluded), with their mtimes."""
    return {p: p.stat().st_mtime_ns for p in root.rglob(pattern) if not is_temporary(p)}


def kill_when(process, appeared, timeout=300):
    """SIGKILL ``process`` as soon as ``appeared()`` is true; fails if it ended first."""
    deadline = time.monotonic() + timeout
    while not appeared():
        assert process.poll() is None, f"finished before the kill:\n{process.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "nothing appeared in time"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()


def faulty_cohort(root: Path) -> Path:
    """The tiny demo cohort plus one row per input fault."""
    manifest = make_demo_cohort(root, GOOD, 5, **TINY_DEMO)
    rows = pd.read_csv(manifest)
    good = rows.iloc[0]
    ct = sitk.ReadImage(str(root / good["ct"]))
    mask = sitk.ReadImage(str(root / good["mask"]))
    (root / "ct" / "truncated.nii.gz").write_bytes((root / good["ct"]).read_bytes()[:200])
    (root / "wsi" / "corrupt.tif").write_bytes(b"II*\x00 not really a tiff")
    shifted = sitk.Image(mask)
    shifted.SetOrigin(tuple(o + 7.0 for o in mask.GetOrigin()))
    sitk.WriteImage(shifted, str(root / "mask" / "shifted.nii.gz"))
    sitk.WriteImage(mask * 0, str(root / "mask" / "empty.nii.gz"))
    blank = np.clip(245 + np.random.default_rng(1).normal(0, 2, (512, 512, 3)), 0, 255).astype(np.uint8)
    write_pyramidal_tiff(root / "wsi" / "blank.tif", blank, 0.5, downsamples=(1, 4))
    outside = root.parent / "elsewhere"
    outside.mkdir()
    sitk.WriteImage(ct, str(outside / "ct.nii.gz"))
    bad = [
        dict(good, case_id="truncated-ct", ct="ct/truncated.nii.gz"),
        dict(good, case_id="corrupt-slide", wsi="wsi/corrupt.tif"),
        dict(good, case_id="shifted-mask", mask="mask/shifted.nii.gz", wsi=""),
        dict(good, case_id="empty-mask", mask="mask/empty.nii.gz", wsi=""),
        dict(good, case_id="no-tissue", ct="", mask="", wsi="wsi/blank.tif"),
        dict(good, case_id="duplicate"),
        dict(good, case_id="duplicate"),
        dict(good, case_id="zero-time", os_time=0),
        dict(good, case_id="negative-time", os_time=-3),
        dict(good, case_id="wrong-type", os_event="yes"),
        dict(good, case_id="outside-path", ct=str(outside / "ct.nii.gz"), wsi=""),
        dict(good, case_id="one-modality", wsi=""),
    ]
    pd.concat([rows, pd.DataFrame(bad)]).to_csv(manifest, index=False)
    return manifest


@pytest.fixture(scope="module")
def pipeline(run_command, start_command, tmp_path_factory):
    """build_graphs SIGKILLed after its first feature file, leftovers planted, then rerun to the end."""
    root = tmp_path_factory.mktemp("faults")
    manifest = faulty_cohort(root / "cohort")
    graphs = root / "graphs"
    features = root / "cohort" / "features"
    args = [f"data.manifest={manifest}", f"output_dir={graphs}", *SMALL_ENCODERS]

    kill_when(start_command("build_graphs", *args), lambda: features.exists() and bool(finished_files(features)))
    at_kill = finished_files(root)
    for path in at_kill:  # whatever was there when it died is whole: writes are atomic
        PatchFeatures.load(path) if features in path.parents else load_graph(path)
    first = sorted(at_kill)[0]
    leftover = first.parent / f".tmp-killed-{first.name}"  # as a kill during torch.save leaves it
    leftover.write_bytes(first.read_bytes()[:100])

    rerun = run_command("build_graphs", *args, check=False)
    failures = {}  # case -> its reasons in every stage, as printed
    for line in rerun.stdout.splitlines():
        if line.strip().startswith("FAILED"):
            case_id, reason = line.strip().removeprefix("FAILED ").split(": ", 1)
            failures[case_id] = failures.get(case_id, "") + reason + " | "
    return {"root": root, "manifest": manifest, "graphs": graphs, "features": features, "at_kill": at_kill,
            "leftover": leftover, "rerun": rerun, "failures": failures}


def good_ids(manifest) -> list[str]:
    return pd.read_csv(manifest)["case_id"].tolist()[:GOOD]


# -- killed mid-run --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_during_build_graphs_rerun_finishes_without_redoing(pipeline):
    rerun = pipeline["rerun"]
    assert rerun.returncode == 1, rerun.stdout[-3000:] + rerun.stderr[-3000:]  # 1: the bad rows
    for path, mtime in pipeline["at_kill"].items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was redone"
    assert re.search(r"encode radiology \(radiomics_maps\): \d+ done, [1-9]\d* skipped", rerun.stdout)
    for case_id in good_ids(pipeline["manifest"]):
        for modality in ("radiology", "pathology"):
            assert load_graph(graph_path(pipeline["graphs"], modality, case_id)).num_nodes > 0
    record = json.loads((pipeline["graphs"] / "run_record.json").read_text())
    assert record["status"] == "finished with failed cases"


@pytest.mark.slow
def test_temporary_leftovers_are_never_read_as_outputs(pipeline, tmp_path):
    leftover = pipeline["leftover"]
    assert leftover.exists()  # untouched: no reader or writer looked at it
    case_id = leftover.name.removeprefix(".tmp-killed-").removesuffix(".pt")
    assert case_id not in pipeline["failures"]
    run = tmp_path / "run"
    atomic_torch_save({"pathology": torch.ones(2)}, run / "fold0" / "importance" / "a.pt")
    (run / "fold0" / "importance" / ".tmp-x-b.pt").write_bytes(b"half")
    assert set(load_run(run, "survival", {}).importance) == {"a"}


@pytest.mark.slow
def test_sigkill_during_training_rerun_finishes_without_redoing(run_command, start_command, tmp_path):
    manifest = toy_cohort(tmp_path, n=18)
    run = tmp_path / "run"
    args = [f"data.manifest={manifest}", f"data.graph_dir={tmp_path / 'graphs'}", f"output_dir={run}",
            "folds.n_folds=3", "training.epochs=40", "model.kwargs.hidden=8", "threads=1"]
    kill_when(start_command("train", *args), lambda: (run / "fold0" / "vectors.csv").is_file())
    assert not (run / "fold2" / "vectors.csv").exists()
    fold0 = finished_files(run / "fold0", "*")
    (run / "fold2").mkdir(exist_ok=True)
    (run / "fold2" / ".tmp-killed-vectors.csv").write_text("case_id,split\nhalf")
    rerun = run_command("train", *args, check=False)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "1 skipped" in rerun.stdout
    assert finished_files(run / "fold0", "*") == fold0
    for k in range(3):
        assert len(pd.read_csv(run / f"fold{k}" / "vectors.csv")) == 18
    record = json.loads((run / "run_record.json").read_text())
    assert record["status"] == "finished" and set(record["epochs"]) == {"fold0", "fold1", "fold2"}


# -- bad input: each names the case and the problem, the others complete ------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("case_id, problem", [
    ("corrupt-slide", "cannot open slide"),
    ("truncated-ct", "cannot read CT"),
    ("shifted-mask", "mask geometry differs from image: origin"),
    ("empty-mask", "tumour mask is empty"),
    ("no-tissue", "no tissue found"),
    ("duplicate", "case_id appears 2 times"),
    ("zero-time", "os_time must be a positive number, got 0"),
    ("negative-time", "os_time must be a positive number, got -3"),
    ("wrong-type", "os_event must be 0 or 1, got 'yes'"),
    ("outside-path", "outside the manifest's folder"),
])
def test_bad_case_is_reported_by_name_and_the_others_complete(pipeline, case_id, problem):
    assert problem in pipeline["failures"][case_id]
    failures = pd.concat(pd.read_csv(p) for p in pipeline["root"].rglob("failures.csv"))
    assert case_id in set(failures["case_id"])
    for good in good_ids(pipeline["manifest"]):
        assert good not in pipeline["failures"]


@pytest.mark.slow
def test_patient_with_one_modality_keeps_it_for_training(pipeline):
    assert "gives no whole-slide image" in pipeline["failures"]["one-modality"]
    assert graph_path(pipeline["graphs"], "radiology", "one-modality").is_file()
    cohort = load_graph_cohort(pipeline["manifest"], pipeline["graphs"], ["radiology", "pathology"],
                               allow_mixed_graphs=False)
    patient = next(p for p in cohort.patients if p.case_id == "one-modality")
    assert set(patient.graphs) == {"radiology"}
    # corrupt-slide keeps its CT graph and truncated-ct its slide graph, like one-modality
    assert cohort.modality_counts() == {"radiology": GOOD + 2, "pathology": GOOD + 1}


@pytest.mark.slow
def test_nan_or_inf_features_fail_that_case_only(pipeline, compose_config, tmp_path):
    good = good_ids(pipeline["manifest"])[0]
    source = pipeline["features"] / "radiology" / "radiomics_maps"
    features = tmp_path / "features" / "radiology" / "radiomics_maps"
    features.mkdir(parents=True)
    shutil.copy(source / f"{good}.pt", features / f"{good}.pt")
    data = torch.load(source / f"{good}.pt", weights_only=True)
    data["features"][0, 0] = float("nan")
    data["case_id"] = "nan-case"
    torch.save(data, features / "nan-case.pt")
    cfg = compose_config("build_graphs", [f"data.manifest={pipeline['manifest']}",
                                          f"data.features_dir={tmp_path / 'features'}",
                                          f"output_dir={tmp_path / 'graphs'}"])
    summary = build_modality_graphs(cfg, [good, "nan-case"], "radiology")
    assert summary.done == [good]
    assert summary.failed == [("nan-case", "ValueError: case 'nan-case': radiology features contain NaN or inf")]
    # a graph damaged after building is caught when training reads it
    graph = load_graph(graph_path(tmp_path / "graphs", "radiology", good))
    graph.x[0, 0] = float("inf")
    atomic_torch_save(graph, graph_path(tmp_path / "graphs", "radiology", good))
    pd.DataFrame({"case_id": [good], "os_time": [100.0], "os_event": [1]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ValueError, match="no radiology graphs"):  # its only graph is unusable ...
        load_graph_cohort(tmp_path / "m.csv", tmp_path / "graphs", ["radiology"], allow_mixed_graphs=False)


def test_inf_graph_features_are_reported_by_case(tmp_path):
    manifest = toy_cohort(tmp_path, n=6)
    graph = load_graph(graph_path(tmp_path / "graphs", "pathology", "toy-002"))
    graph.x[1, 2] = float("inf")
    atomic_torch_save(graph, graph_path(tmp_path / "graphs", "pathology", "toy-002"))
    cohort = load_graph_cohort(manifest, tmp_path / "graphs", ["radiology", "pathology"], allow_mixed_graphs=False)
    problem = next(p for p in cohort.problems if p.case_id == "toy-002")
    assert "pathology graph" in problem.reason and "non-finite" in problem.reason
    assert len(cohort.patients) == 6  # toy-002 goes on with its radiology graph


def test_manifest_missing_columns_or_wrong_types(tmp_path):
    path = tmp_path / "manifest.csv"
    pd.DataFrame({"case_id": ["a", "b"], "ct": ["x", "y"]}).to_csv(path, index=False)
    with pytest.raises(ManifestError, match="missing column\\(s\\) mask"):
        load_manifest(path, required=("ct", "mask"))
    with pytest.raises(ValueError, match="missing column\\(s\\) os_time, os_event"):
        read_survival(path)
    pd.DataFrame({"case_id": ["a", "b", "c"], "os_time": ["12", "soon", 5], "os_event": [1, 0, 2.5]}).to_csv(
        path, index=False)
    problems = {p.case_id: p.reason for p in load_manifest(path).problems}
    assert problems == {"b": "os_time must be a positive number, got 'soon'",
                        "c": "os_event must be 0 or 1, got 2.5"}


def test_survival_times_not_positive_are_named(tmp_path):
    path = tmp_path / "table.csv"
    pd.DataFrame({"case_id": ["a", "b", "c"], "os_time": [10, 0, -1], "os_event": [1, 0, 1]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="os_time must be > 0 and os_event 0 or 1; bad rows: b, c"):
        read_survival(path)
    assert {p.case_id for p in load_manifest(path).problems} == {"b", "c"}


def test_all_censored_cohort_is_refused_with_a_clear_message(compose_config, tmp_path):
    manifest = toy_cohort(tmp_path, n=8)
    pd.read_csv(manifest).assign(os_event=0).to_csv(manifest, index=False)
    cfg = compose_config("train", [f"data.manifest={manifest}", f"data.graph_dir={tmp_path / 'graphs'}",
                                   f"output_dir={tmp_path / 'run'}", "folds.n_folds=2"])
    with pytest.raises(SystemExit, match="all 8 patients are censored"):
        run_training(cfg)
    fabricate_run(tmp_path / "survival_run", n_patients=20)
    table = tmp_path / "survival_run" / "manifest.csv"
    pd.read_csv(table).assign(os_event=0).to_csv(table, index=False)
    cfg = compose_config("survival", [f"run_dir={tmp_path / 'survival_run'}", f"data.manifest={table}",
                                      "models=[CoxPH]", *FAST])
    with pytest.raises(ValueError, match="all 20 patients are censored"):
        run_survival(cfg)


def test_all_censored_fold_is_reported_and_the_other_folds_scored(compose_config, tmp_path):
    manifest = fabricate_run(tmp_path / "run", n_patients=40, censored_fold=1)
    cfg = compose_config("survival", [f"run_dir={tmp_path / 'run'}", f"data.manifest={manifest}", "models=[CoxPH]",
                                      *FAST])
    result, summary, _ = run_survival(cfg)
    fold1 = result.metrics[result.metrics["fold"] == 1]
    assert fold1["value"].isna().all() and fold1["note"].str.contains("no events in the test fold").all()
    assert summary.set_index(["model", "metric"]).loc[("CoxPH", "c_index"), "n_folds"] == 4


# -- paths and checkpoints ------------------------------------------------------------------------------
def test_manifest_paths_cannot_leave_its_folder_unless_allowed(compose_config, tmp_path):
    (tmp_path / "cohort").mkdir()
    (tmp_path / "secret.nii.gz").write_bytes(b"x")
    (tmp_path / "cohort" / "a.nii.gz").write_bytes(b"x")
    path = tmp_path / "cohort" / "manifest.csv"
    pd.DataFrame({"case_id": ["in", "up", "abs"], "ct": ["a.nii.gz", "../secret.nii.gz",
                                                          str(tmp_path / "secret.nii.gz")]}).to_csv(path, index=False)
    manifest = load_manifest(path)
    assert manifest.image_path("in", "ct") == tmp_path / "cohort" / "a.nii.gz"
    for case_id in ("up", "abs"):
        with pytest.raises(CaseError, match=f"case '{case_id}': ct path .*secret.nii.gz is outside the manifest's "
                                            "folder .* data.allow_outside_paths=true"):
            manifest.image_path(case_id, "ct")
    allowed = load_manifest(path, allow_outside=True).select_shard(0, 1)
    assert allowed.image_path("up", "ct") == tmp_path / "secret.nii.gz"
    assert compose_config("build_graphs")["data"]["allow_outside_paths"] is False


def test_pickled_checkpoint_is_refused_unless_trusted(compose_config, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "path": pathlib.PurePosixPath("/models")}, path)
    with pytest.raises(CheckpointError, match="(?s)weights_only=True.*trust_pickled_checkpoints=true"):
        load_state_dict(path)
    with checkpoint_unpickling(True):
        assert torch.equal(load_state_dict(path)["w"], torch.ones(2))
    with pytest.raises(CheckpointError):  # the opt-in ends with its block
        load_state_dict(path)
    assert compose_config("encode")["trust_pickled_checkpoints"] is False


# -- disk full, read-only folder --------------------------------------------------------------------------
def _fail(code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return fail


def test_disk_full_is_a_clear_error_and_damages_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    summary = RunSummary("stage", failed=[("a", "old reason")])
    summary.write_failures(out / "failures.csv")
    with run_record("train", None, out):
        pass
    before = {p: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(radiopath.io.os, "replace", _fail(errno.ENOSPC))
    with pytest.raises(OSError, match=f"cannot write {out / 'failures.csv'}: No space left on device"):
        RunSummary("stage", failed=[("b", "new")]).write_failures(out / "failures.csv")
    with pytest.raises(RuntimeError, match="stage broke"):  # the record cannot be written either: stage error wins
        with run_record("train", None, out):
            raise RuntimeError("stage broke")
    assert {p: p.read_bytes() for p in out.iterdir()} == before  # no .tmp-* left, old files intact


def test_read_only_output_folder_is_a_clear_error(tmp_path, monkeypatch):
    out = tmp_path / "out"
    atomic_write_csv(pd.DataFrame({"x": [1]}), out / "table.csv")
    monkeypatch.setattr(radiopath.io.tempfile, "mkstemp", _fail(errno.EROFS))
    with pytest.raises(OSError, match=f"cannot write {out / 'graph.pt'}: Read-only file system") as error:
        atomic_torch_save({"x": torch.ones(1)}, out / "graph.pt")
    assert error.value.errno == errno.EROFS
    assert sorted(p.name for p in out.iterdir()) == ["table.csv"]
    assert pd.read_csv(out / "table.csv")["x"].tolist() == [1]
