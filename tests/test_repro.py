"""The run record (run_record.json), the checklist built from it, and its section in the report."""

import hashlib
import json
import re

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from radiopath import repro
from radiopath.report import checklist
from radiopath.repro import manifest_summary, run_record
from radiopath.training.stage import run_training
from test_training import toy_cohort, train_config


def test_record_holds_config_seeds_versions_hashes_and_times(tmp_path):
    weights = tmp_path / "encoder.pt"
    torch.save({"w": torch.ones(3)}, weights)
    cfg = OmegaConf.create({"seed": 3, "folds": {"seed": 1, "n_folds": 5}, "out": "${folds.n_folds}"})
    with run_record("train", cfg, tmp_path / "run") as record:
        record.input(weights, "cohort manifest")
        record.input(weights, "cohort manifest")  # recorded once
        record.weights(weights, source="encoder.pathology.checkpoint")
        record.weights(None, source="encoder.radiology.checkpoint")
        record.parameters("fold0", torch.nn.Linear(3, 2))
        record.timing("fold0", 1.25)
        record.epochs("fold0", pd.DataFrame({"epoch": [1, 2], "loss": [1.0, float("nan")], "epoch_seconds": [0.1, 0.2]}))
        record.note("a note")

    data = json.loads((tmp_path / "run" / "run_record.json").read_text())
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert data["status"] == "finished" and data["stage"] == "train"
    assert data["config"]["out"] == 5  # resolved
    assert data["seeds"] == {"seed": 3, "folds.seed": 1}
    assert [e["sha256"] for e in data["inputs"]] == [digest]
    assert data["weights"][0]["sha256"] == digest and data["weights"][0]["source"] == "encoder.pathology.checkpoint"
    assert data["weights"][1]["random_init"] is True
    assert data["parameters"]["fold0"] == {"total": 8, "trainable": 8}
    assert data["epochs"]["fold0"][1] == {"epoch": 2, "loss": None, "epoch_seconds": 0.2}  # NaN -> null: strict JSON
    assert data["timings"]["fold0"] == 1.25 and data["timings"]["stage_total"] >= 0
    assert torch.__version__.startswith(data["packages"]["torch"])
    assert {"python", "torch-geometric", "scikit-survival", "lifelines", "openslide-library", "cuda", "cudnn"} <= set(
        data["packages"])
    assert data["determinism"]["torch_deterministic_algorithms"] == torch.are_deterministic_algorithms_enabled()
    assert data["hardware"]["cpu_cores"] >= 1 and data["hardware"]["memory_bytes"] > 0
    assert data["peak_memory"]["max_rss_bytes"] > 0
    assert data["git"]["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", data["git"]["commit"])
    assert data["notes"] == ["a note"]


def test_failed_stage_still_writes_its_record_with_the_error(tmp_path):
    with pytest.raises(ValueError, match="bad fold"):
        with run_record("survival", OmegaConf.create({"seed": 0}), tmp_path):
            raise ValueError("bad fold")
    data = json.loads((tmp_path / "run_record.json").read_text())
    assert data["status"] == "failed"
    assert data["error"]["type"] == "ValueError" and data["error"]["message"] == "bad fold"
    assert not list(tmp_path.glob(".tmp-*"))


def test_without_git_commit_and_dirty_flag_are_null(tmp_path, monkeypatch):
    assert repro.git_state(tmp_path) == {"commit": None, "dirty": None}  # not a repository
    monkeypatch.setattr(repro.shutil, "which", lambda name: None)  # no git installed
    assert repro.git_state() == {"commit": None, "dirty": None}
    with run_record("report", None, tmp_path):
        pass
    assert json.loads((tmp_path / "run_record.json").read_text())["git"] == {"commit": None, "dirty": None}


def test_dataset_summary_counts_events_labels_and_images():
    frame = pd.DataFrame({
        "case_id": ["a", "b", "c"], "os_event": [1, 0, 1], "malignant": [1, 1, 0], "high_grade": [1.0, 0.0, None],
        "ct": ["/x/a.nii.gz", "/x/b.nii.gz", "/x/c.nii.gz"], "mask": ["/m/a", "/m/b", "/m/c"], "wsi": ["/w/a", "", None],
    })
    summary = manifest_summary(frame, rejected=2)
    assert summary["patients"] == 3 and summary["events"] == 2 and summary["censored"] == 1
    assert summary["labels"] == {"malignant": {"0": 1, "1": 2}, "high_grade": {"0": 1, "1": 1}}
    assert summary["images_present"] == {"ct": 3, "mask": 3, "wsi": 1}
    assert summary["images_per_case"] == {"2": 2, "3": 1}
    assert summary["rejected_rows"] == 2


@pytest.fixture(scope="module")
def recorded_run(compose_config, tmp_path_factory):
    """A 2-fold SPARRA run with its record, plus a survival-stage record in RUN/survival."""
    root = tmp_path_factory.mktemp("recorded")
    manifest = toy_cohort(root, n=16)
    cfg = train_config(compose_config, root, manifest, "folds.n_folds=2", "training.epochs=2", "model.kwargs.hidden=8")
    with run_record("train", cfg, cfg.output_dir):
        run_training(cfg)
    survival_cfg = OmegaConf.create({"seed": 0, "models": ["CoxPH", "RSF"]})
    with run_record("survival", survival_cfg, root / "run" / "survival") as record:
        record.dataset(folds={"0": {"train": 8, "test": 8, "test_events": 3}})
    return root / "run"


def test_training_records_epochs_parameters_checkpoints_and_cohort(recorded_run):
    data = json.loads((recorded_run / "run_record.json").read_text())
    assert set(data["epochs"]) == {"fold0", "fold1"}
    history = pd.read_csv(recorded_run / "fold0" / "history.csv")
    assert [row["epoch_seconds"] for row in data["epochs"]["fold0"]] == pytest.approx(history["epoch_seconds"].tolist())
    assert (history["epoch_seconds"] > 0).all()
    assert data["parameters"]["fold0"]["total"] > 0
    model = recorded_run / "fold1" / "model.pt"
    entry = next(e for e in data["outputs"] if e["role"] == "fold1 checkpoint")
    assert entry["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    roles = {e["role"] for e in data["inputs"]}
    assert roles == {"cohort manifest", "folds"}
    assert data["dataset"]["patients"] == 16 and data["dataset"]["modalities_present"] == {"radiology": 16,
                                                                                         "pathology": 16}
    assert data["cases"]["train sparra on radiology+pathology"]["done"] == 2


def test_checklist_groups_items_as_in_the_paper_and_reads_sub_folders(recorded_run, compose_config):
    cfg = compose_config("checklist", [f"run_dirs=[{recorded_run}]", "json=true"])
    result = json.loads(checklist.run(cfg).lines[0])
    assert [r["stage"] for r in result["records"]] == ["train", "survival"]
    assert [p["name"].split(":")[0] for p in result["parts"]] == [f"Part {n}" for n in ("I", "II", "III", "IV", "V")]
    items = {i["id"]: i for p in result["parts"] for i in p["items"]}
    assert len(items) == 31
    for recorded in (11, 12, 16, 17, 19, 20, 21, 24, 25, 26, 28):
        assert items[recorded]["status"] in ("recorded", "partly") and items[recorded]["evidence"], recorded
    assert "torch " + torch.__version__.split("+")[0] in items[16]["evidence"] and "hydra-core" in items[16]["evidence"]
    for author in (1, 4, 7, 18, 22, 27):
        assert items[author]["status"] == "author" and items[author]["author"]
    assert "ethics" in items[4]["author"] and "readers" in items[27]["author"]
    assert "External validation".lower() in items[28]["author"].lower()
    text = checklist.run(compose_config("checklist", [f"run_dirs=[{recorded_run}]"])).lines[0]
    assert "Part IV: Training, Validation and Testing" in text and "for the author: ethics approval" in text


@pytest.mark.slow
def test_checklist_command_prints_json_only_and_names_a_missing_folder(recorded_run, run_command, tmp_path):
    done = run_command("checklist", f"run_dirs=[{recorded_run}]", "json=true", cwd=tmp_path, timeout=120)
    assert json.loads(done.stdout)["counts"]["recorded"] > 0  # stdout is JSON and nothing else
    assert not list(tmp_path.iterdir())  # the command only reads
    missing = run_command("checklist", f"run_dirs=[{tmp_path / 'nope'}]", cwd=tmp_path, timeout=120, check=False)
    assert missing.returncode == 2 and "run_dirs: no run folder" in missing.stderr


def test_checklist_skips_temporary_and_failed_records(recorded_run, tmp_path):
    (tmp_path / ".tmp-abc-run_record.json").write_text(json.dumps({"stage": "train", "record_version": 1}))
    with pytest.raises(RuntimeError):
        with run_record("train", OmegaConf.create({"training": {"batch_size": 2, "lr": 0.1}}), tmp_path):
            raise RuntimeError("killed")
    records = checklist.load_records(tmp_path)
    assert [r["status"] for r in records] == ["failed"]
    items = {i["id"]: i for p in checklist.evaluate(records) for i in p["items"]}
    assert items[20]["status"] == "missing"  # a failed run's settings are not evidence


def test_report_has_a_reproducibility_checklist_section(recorded_run, compose_config, tmp_path):
    from radiopath.report import build_report

    cfg = compose_config("report", [f"run_dirs=[{recorded_run}]", f"output={tmp_path / 'report'}",
                                    "overlays.n_cases=0"])
    page = build_report(cfg).read_text()
    section = page[page.index('<section id="reproducibility">'):]
    assert "<h2>Reproducibility checklist</h2>" in section
    assert "Part V: Accessibility" in section and "sha256 of 2 weight/checkpoint file(s)" in section
    assert "ethics approval" in section
    assert re.search(r"\d+ recorded, \d+ partly, \d+ missing, \d+ author", section)
