"""Fold-parallel training: one job per fold in one run folder gives the single-process run."""

import json
import os
import signal
import threading

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import TINY_MODEL
from radiopath.training.stage import run_training
from radiopath.folds import make_folds
from radiopath.training.folds import create_once, load_or_make_folds

from test_training import toy_cohort


def test_concurrent_jobs_write_one_folds_file_and_all_read_it(tmp_path):
    ids = [f"p{i}" for i in range(30)]
    events = np.array([1, 0, 0] * 10)
    path = tmp_path / "run" / "folds.csv"
    start = threading.Barrier(8)
    results = {}

    def job(i):
        start.wait()
        results[i] = load_or_make_folds(path, ids, events, n_folds=5, seed=i)  # different seeds: the first writer wins

    threads = [threading.Thread(target=job, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    written = pd.read_csv(path, dtype={"case_id": str})
    for folds in results.values():
        pd.testing.assert_frame_equal(folds, written)
    assert [p.name for p in path.parent.iterdir()] == ["folds.csv"]  # no staging file left behind
    assert not create_once(make_folds(ids, events, n_folds=5, seed=99), path)  # an existing file is never replaced
    pd.testing.assert_frame_equal(pd.read_csv(path, dtype={"case_id": str}), written)


@pytest.mark.slow
def test_fold_jobs_of_a_multirun_equal_the_single_process_run(compose_config, start_command, tmp_path):
    manifest = toy_cohort(tmp_path, n=16)
    common = [f"data.manifest={manifest}", f"data.graph_dir={tmp_path / 'graphs'}", "folds.n_folds=2", "threads=1",
              "training.epochs=2", *TINY_MODEL]
    multi, single = tmp_path / "multi", tmp_path / "single"
    jobs = start_command("train", "-m", "hydra/launcher=submitit_local", "fold=range(2)", f"output_dir={multi}",
                         f"hydra.sweep.dir={tmp_path / 'sweep'}", *common)
    try:
        assert run_training(compose_config("train", [*common, f"output_dir={single}"])).ok  # while the jobs run
        log = jobs.communicate(timeout=600)[0]
    finally:
        if jobs.poll() is None:  # the launcher and its fold jobs: one process group
            os.killpg(jobs.pid, signal.SIGKILL)
    assert jobs.returncode == 0, log[-3000:]

    assert (multi / "folds.csv").read_bytes() == (single / "folds.csv").read_bytes()
    for k in range(2):
        pd.testing.assert_frame_equal(pd.read_csv(multi / f"fold{k}" / "vectors.csv"),
                                      pd.read_csv(single / f"fold{k}" / "vectors.csv"), check_exact=True)
        record = json.loads((multi / f"run_record_fold{k}.json").read_text())
        assert record["status"] == "finished" and record["config"]["fold"] == k
        assert set(record["epochs"]) == {f"fold{k}"}
        assert (multi / f"failures_fold{k}.csv").is_file()
    assert not (multi / "run_record.json").exists() and not (multi / "failures.csv").exists()
    configs = [OmegaConf.to_container(OmegaConf.load(run / "config.yaml")) for run in (multi, single)]
    for config in configs:
        del config["output_dir"]
    assert configs[0] == configs[1] and "fold" not in configs[0]


def test_a_fold_not_in_the_folds_file_is_refused(compose_config, tmp_path):
    manifest = toy_cohort(tmp_path, n=8)
    cfg = compose_config("train", [f"data.manifest={manifest}", f"data.graph_dir={tmp_path / 'graphs'}",
                                   f"output_dir={tmp_path / 'run'}", "folds.n_folds=2", "fold=[1,2]"])
    with pytest.raises(SystemExit, match=r"fold=\[2\]: .* has folds \[0, 1\]"):
        run_training(cfg)
    assert not (tmp_path / "run" / "fold1").exists()
