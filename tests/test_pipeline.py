"""End to end on a tiny demo cohort: encode -> build_graphs, resume, failures, shards.

The entry points run as subprocesses, exactly as a user runs them.
"""

import shutil

import pandas as pd
import pytest
import torch

from conftest import SMALL_ENCODERS, TINY_DEMO
from radiopath.data.demo_cohort import make_demo_cohort
from radiopath.encoders.features import PatchFeatures
from radiopath.graphs import load_graph
from radiopath.layout import graph_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_demo_cohort(tmp_path_factory.mktemp("cohort"), 3, 5, **TINY_DEMO)


@pytest.fixture(scope="module")
def built(cohort, run_command, tmp_path_factory):
    out = tmp_path_factory.mktemp("graphs")
    result = run_command("build_graphs", f"data.manifest={cohort}", f"output_dir={out}", *SMALL_ENCODERS)
    return out, result


def test_build_graphs_encodes_and_builds_every_case(cohort, built):
    out, result = built
    case_ids = pd.read_csv(cohort)["case_id"].tolist()
    assert "0 failed" in result.stdout
    for case_id in case_ids:
        ct = PatchFeatures.load(cohort.parent / "features" / "radiology" / "radiomics_maps" / f"{case_id}.pt")
        wsi = PatchFeatures.load(cohort.parent / "features" / "pathology" / "hipt" / f"{case_id}.pt")
        assert ct.features.shape[1] > 1 and wsi.features.shape[1] == 32
        assert wsi.level0_mpp == pytest.approx(0.5)
        for modality, patches in (("radiology", ct), ("pathology", wsi)):
            graph = load_graph(graph_path(out, modality, case_id))
            assert graph.assignment.shape == (len(patches.features),)
            assert int(graph.assignment.max()) + 1 == graph.num_nodes
            assert graph.pos.shape[1] == (3 if modality == "radiology" else 2)


def test_rerun_skips_finished_cases(cohort, built, run_command):
    out, _ = built
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    result = run_command("build_graphs", f"data.manifest={cohort}", f"output_dir={out}", *SMALL_ENCODERS)
    assert "0 done, 3 skipped" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")} == before


def test_bad_cases_are_reported_and_the_others_finish(cohort, built, run_command, tmp_path):
    manifest = pd.read_csv(cohort)
    shutil.copytree(cohort.parent, tmp_path / "cohort", ignore=shutil.ignore_patterns("features"))
    root = tmp_path / "cohort"
    good = manifest.iloc[0]
    truncated = root / "ct" / "truncated.nii.gz"
    truncated.write_bytes((root / good["ct"]).read_bytes()[:200])
    (root / "wsi" / "corrupt.tif").write_bytes(b"II*\x00 not really a tiff")
    bad = [
        dict(good, case_id="truncated-ct", ct="ct/truncated.nii.gz"),
        dict(good, case_id="corrupt-slide", wsi="wsi/corrupt.tif"),
        dict(good, case_id="duplicate"),
        dict(good, case_id="duplicate"),
    ]
    pd.concat([manifest, pd.DataFrame(bad)]).to_csv(root / "manifest.csv", index=False)

    result = run_command("build_graphs", f"data.manifest={root / 'manifest.csv'}", f"output_dir={tmp_path / 'g'}",
                         *SMALL_ENCODERS, check=False)
    assert result.returncode == 1
    assert "FAILED truncated-ct" in result.stdout and "FAILED corrupt-slide" in result.stdout
    assert "FAILED duplicate: case_id appears 2 times" in result.stdout
    ct_failures = pd.read_csv(root / "features" / "radiology" / "radiomics_maps" / "failures.csv")
    assert set(ct_failures["case_id"]) == {"truncated-ct", "duplicate"}
    for case_id in manifest["case_id"]:
        assert graph_path(tmp_path / "g", "radiology", case_id).is_file()
        assert graph_path(tmp_path / "g", "pathology", case_id).is_file()


def test_sharded_multirun_equals_single_process(cohort, built, run_command, tmp_path):
    out, _ = built
    sharded = tmp_path / "sharded"
    run_command(
        "build_graphs", "-m", "hydra/launcher=submitit_local", "num_shards=2", "shard=0,1",
        f"data.manifest={cohort}", f"output_dir={sharded}", f"hydra.sweep.dir={tmp_path / 'sweep'}", *SMALL_ENCODERS,
    )
    single = sorted(p.relative_to(out) for p in out.rglob("*.pt"))
    assert sorted(p.relative_to(sharded) for p in sharded.rglob("*.pt")) == single
    for relative in single:
        a, b = load_graph(out / relative), load_graph(sharded / relative)
        for key in ("x", "edge_index", "pos", "assignment"):
            assert torch.equal(a[key], b[key]), (relative, key)
