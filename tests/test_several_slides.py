"""Several slides per patient: one graph per slide, joined into the patient's pathology graph; encoded and
built slide by slide; trained, folded and exported per patient, mapped back to each slide.

The cohort is the demo's, with two patients given a second slide: a copy of another patient's slide under
a new name (so its graph must equal that patient's), one of them with a second, different resolution.
"""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import SMALL_ENCODERS, TINY_DEMO, TINY_MODEL
from radiopath.data.demo_cohort import make_demo_cohort
from radiopath.data.manifest import load_manifest
from radiopath.encoders.bags import write_bag
from radiopath.encoders.features import PatchFeatures
from radiopath.errors import CaseError
from radiopath.graphs import load_graph
from radiopath.graphs import stage as graph_stage
from radiopath.graphs.build import build_graph, join_slide_graphs
from radiopath.graphs.io import slide_segments
from radiopath.layout import ExportFolder, RunFolder, features_path, graph_path
from radiopath.modality import PATHOLOGY
from radiopath.report.overlays import case_images
from radiopath.training.cohort import load_graph_cohort

ENCODER = "hipt"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, run_command):
    """Six demo patients, the first two with a second slide; graphs built, SPARRA trained on 3 folds, exported."""
    root = tmp_path_factory.mktemp("slides")
    manifest = make_demo_cohort(root / "cohort", 6, 11, **TINY_DEMO)
    frame = pd.read_csv(manifest, dtype={"case_id": str})
    ids = list(frame["case_id"])
    donors = {ids[0]: ids[4], ids[1]: ids[5]}  # patient -> the patient whose slide it gets as a second one
    for case_id, donor in donors.items():
        shutil.copy(root / "cohort" / "wsi" / f"{donor}.tif", root / "cohort" / "wsi" / f"{case_id}_B.tif")
        frame.loc[frame["case_id"] == case_id, "wsi"] = f"wsi/{case_id}.tif;wsi/{case_id}_B.tif"
    frame.to_csv(manifest, index=False)

    graphs, features, run = root / "graphs", root / "features", root / "run"
    built = run_command("build_graphs", f"data.manifest={manifest}", f"data.features_dir={features}",
                        f"output_dir={graphs}", "modalities=[pathology]", *SMALL_ENCODERS)
    trained = run_command("train", f"data.manifest={manifest}", f"data.graph_dir={graphs}",
                          f"data.features_dir={features}", f"output_dir={run}", "model=sparra",
                          "modalities=[pathology]", "folds.n_folds=3", "training.epochs=2", "threads=1", *TINY_MODEL)
    exported = run_command("export", f"run_dir={run}", "preview.thumbnail_px=128", "preview.dpi=40")
    reported = run_command("report", f"run_dirs=[{run}]", f"output={root / 'report'}",
                           f"overlays.cases=[{ids[0]},{ids[2]}]", "overlays.thumbnail_px=128", "figures.dpi=40")
    return {"root": root, "manifest": manifest, "ids": ids, "donors": donors, "graphs": graphs, "features": features,
            "run": run, "report": root / "report", "outputs": (built, trained, exported, reported)}


@pytest.mark.slow
def test_each_slide_is_encoded_and_built_on_its_own_and_the_patient_graph_joins_them(cohort):
    graphs, features = cohort["graphs"], cohort["features"]
    for case_id, donor in cohort["donors"].items():
        # one feature file per slide, named by the slide; the donor's slide copy encodes as the donor's slide
        own = PatchFeatures.load(features_path(features, "pathology", ENCODER, case_id, slide=case_id))
        second = PatchFeatures.load(features_path(features, "pathology", ENCODER, case_id, slide=f"{case_id}_B"))
        assert not features_path(features, "pathology", ENCODER, case_id).exists()
        donated = PatchFeatures.load(features_path(features, "pathology", ENCODER, donor))
        np.testing.assert_array_equal(second.coords, donated.coords)

        graph = load_graph(graph_path(graphs, "pathology", case_id))
        alone = load_graph(graph_path(graphs, "pathology", donor))
        assert graph.slide_names == [case_id, f"{case_id}_B"]
        assert graph.slide_patches.tolist() == [len(own.coords), len(second.coords)]
        first_nodes = int((graph.slide == 0).sum())
        assert graph.num_nodes == first_nodes + alone.num_nodes
        # the second slide's part of the union is the donor's graph, offset by the first slide's nodes
        torch.testing.assert_close(graph.x[first_nodes:], alone.x)
        assert torch.equal(graph.assignment[len(own.coords):] - first_nodes, alone.assignment)
        # no edge joins the two slides
        assert torch.equal(graph.slide[graph.edge_index[0]], graph.slide[graph.edge_index[1]])
    single = load_graph(graph_path(graphs, "pathology", cohort["ids"][2]))
    assert "slide" not in single and slide_segments(single) == [(None, slice(0, len(single.assignment)))]


@pytest.mark.slow
def test_folds_split_patients_and_a_test_patients_importance_covers_all_its_slides(cohort):
    run = RunFolder(cohort["run"])
    folds = pd.read_csv(run.folds, dtype={"case_id": str})
    assert sorted(folds["case_id"]) == sorted(cohort["ids"]) and folds["case_id"].is_unique
    for case_id in cohort["donors"]:
        fold = int(folds.set_index("case_id").loc[case_id, "fold"])
        vectors = pd.read_csv(run.root / f"fold{fold}" / "vectors.csv", dtype={"case_id": str})
        assert vectors.loc[vectors["case_id"] == case_id, "split"].tolist() == ["test"]
        nodes = torch.load(run.importance(fold, case_id), weights_only=True)["pathology"]
        graph = load_graph(graph_path(cohort["graphs"], "pathology", case_id))
        assert nodes.numel() == graph.num_nodes  # one patient, every slide's nodes, scored together
        for other in range(3):
            if other != fold:
                assert not run.importance(other, case_id).exists()


@pytest.mark.slow
def test_export_writes_one_geojson_per_slide_with_that_slides_tiles(cohort):
    folds = pd.read_csv(RunFolder(cohort["run"]).folds, dtype={"case_id": str}).set_index("case_id")["fold"]
    manifest = load_manifest(cohort["manifest"])
    for case_id in cohort["donors"]:
        folder = ExportFolder(cohort["run"] / "export")
        record = json.loads(folder.done(int(folds[case_id]), case_id).read_text())
        written = record["files"]["pathology"]
        assert [entry["geojson"] for entry in written] == [f"{case_id}.geojson", f"{case_id}_B.geojson"]
        _, images = case_images(cohort["graphs"], cohort["features"], "pathology", case_id, manifest=manifest)
        for entry, image in zip(written, images):
            tiles = json.loads((folder.case(int(folds[case_id]), case_id) / entry["geojson"]).read_text())
            assert len(tiles["features"]) == len(image.patches.coords)
            assert [f["properties"]["node"] for f in tiles["features"]] == image.nodes.tolist()
            assert entry["slide"] == str(image.files[PATHOLOGY.image_column])


# --------------------------------------------------------------------------- joining, bags, bad input


def toy_patches(case_id, n, width, *, encoder="uni", seed=0, mpp=0.5):
    rng = np.random.default_rng(seed)
    coords = np.stack(np.meshgrid(np.arange(n), np.arange(n)), -1).reshape(-1, 2) * 256
    return PatchFeatures(case_id, "pathology", encoder, rng.normal(size=(len(coords), width)), coords, (256, 256), mpp)


GRAPH = {"radius": 300.0, "lambda_f": 0.05, "lambda_d": 0.003, "lambda_h": 0.8, "connectivity": 1000.0}


def test_joined_graph_keeps_each_slides_nodes_edges_and_patches():
    parts = [build_graph(toy_patches("p", n, 4, seed=n), **GRAPH) for n in (3, 5, 4)]
    joined = join_slide_graphs(parts, names=["a", "b", "c"])
    starts = np.cumsum([0] + [g.num_nodes for g in parts])
    assert joined.num_nodes == starts[-1] and joined.slide.tolist() == sum(
        ([k] * g.num_nodes for k, g in enumerate(parts)), [])
    for k, ((name, segment), part) in enumerate(zip(slide_segments(joined), parts)):
        assert name == "abc"[k]
        assert torch.equal(joined.assignment[segment] - int(starts[k]), part.assignment)
        torch.testing.assert_close(joined.x[starts[k]:starts[k + 1]], part.x)
    assert joined.edge_index.shape[1] == sum(g.edge_index.shape[1] for g in parts)


def write_bags(root, case_id, parts):
    paths = []
    for k, patches in enumerate(parts):
        path = root / "bags" / f"{case_id}_{k}.h5"
        write_bag(patches, path, tile_size=256, tile_mpp=patches.level0_mpp)
        paths.append(path.relative_to(root).as_posix())
    return ";".join(paths)


def test_bags_of_several_slides_build_one_graph_with_each_slides_resolution(compose_config, tmp_path):
    """Two bags for one patient, ``mpp`` one per slide: each slide's positions in its own µm; a bad case alone fails."""
    rows = [
        {"case_id": "two", "pathology_features": write_bags(tmp_path, "two", [toy_patches("two", 4, 6, seed=1),
                                                                                 toy_patches("two", 3, 6, seed=2)]),
         "mpp": "0.25;0.5", "os_time": 10, "os_event": 1},
        {"case_id": "mixed", "pathology_features": write_bags(tmp_path, "mixed", [
            toy_patches("mixed", 3, 6), toy_patches("mixed", 3, 8, encoder="conch", seed=3)]),
         "os_time": 12, "os_event": 0},
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    cfg = compose_config("build_graphs", [f"data.manifest={tmp_path / 'manifest.csv'}",
                                          f"data.features_dir={tmp_path / 'features'}",
                                          f"output_dir={tmp_path / 'graphs'}", "modalities=[pathology]",
                                          "graph.pathology.radius=10"])
    result = graph_stage.run(cfg)

    assert not result.ok
    failures = pd.read_csv(tmp_path / "graphs" / "pathology" / "failures.csv")
    assert failures["case_id"].tolist() == ["mixed"]
    reason = failures["reason"].iloc[0]
    assert "mixed_0.h5 has 6 features of encoder 'uni'" in reason and "mixed_1.h5 8 of 'conch'" in reason
    graph = load_graph(graph_path(tmp_path / "graphs", "pathology", "two"))
    assert graph.slide_names == ["two_0", "two_1"] and graph.slide_patches.tolist() == [16, 9]
    # radius 10 µm keeps every 256-px patch its own node: positions are the patch centres at each slide's mpp
    positions = graph.pos.numpy()
    np.testing.assert_allclose(positions[:16].min(0), [128 * 0.25] * 2, rtol=1e-6)
    np.testing.assert_allclose(positions[16:].min(0), [128 * 0.5] * 2, rtol=1e-6)
    cohort = load_graph_cohort(tmp_path / "manifest.csv", tmp_path / "graphs", ["pathology"],
                               allow_mixed_graphs=False)
    assert cohort.case_ids == ["two"] and cohort.patients[0].graphs["pathology"].num_nodes == 25


@pytest.mark.parametrize("row, message", [
    ({"wsi": "a.tif;b.tif", "pathology_features": "a.h5"}, "wsi names 2 slides but pathology_features 1 bags"),
    ({"wsi": "a.tif;b.tif", "mpp": "0.25;0.5;1"}, "mpp gives 3 values for 2 slides"),
    ({"wsi": "a.tif;x/a.tif"}, "two of the case's slides are both called 'a'"),
    ({"wsi": "a.tif;b.tif", "mpp": "0.25;-1"}, "mpp must be a positive number"),
    ({"wsi": "a.tif;missing.tif"}, "wsi file not found"),
])
def test_a_row_whose_slides_do_not_add_up_is_refused_by_name(tmp_path, row, message):
    for name in ("a.tif", "b.tif", "x/a.tif", "a.h5"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    pd.DataFrame([{"case_id": "bad", **row}, {"case_id": "fine", "wsi": "a.tif"}]).to_csv(
        tmp_path / "manifest.csv", index=False)
    manifest = load_manifest(tmp_path / "manifest.csv")
    assert manifest.case_ids == ["fine"]
    (problem,) = manifest.problems
    assert problem.case_id == "bad" and message in str(problem)


def test_slides_pair_images_bags_and_resolutions_in_order(tmp_path):
    for name in ("s1.svs", "s2.svs", "s1.h5", "s2.h5"):
        (tmp_path / name).write_bytes(b"")
    pd.DataFrame([{"case_id": "p", "wsi": "s1.svs; s2.svs", "pathology_features": "s1.h5;s2.h5", "mpp": "0.25;"},
                  {"case_id": "q", "wsi": "s1.svs", "mpp": 0.5}]).to_csv(tmp_path / "manifest.csv", index=False)
    manifest = load_manifest(tmp_path / "manifest.csv")
    first, second = manifest.slides("p")
    assert (first.name, first.wsi, first.bag, first.mpp) == ("s1", tmp_path / "s1.svs", tmp_path / "s1.h5", 0.25)
    assert (second.name, second.mpp) == ("s2", None)
    assert [(s.name, s.mpp) for s in manifest.slides("q")] == [("s1", 0.5)]
    with pytest.raises(CaseError, match="wsi names 2 files; this step reads one image per case"):
        manifest.image_path("p", "wsi")


@pytest.mark.slow
def test_the_report_draws_each_slide_of_a_patient_on_its_own(cohort):
    figures = cohort["report"] / "figures"
    two, one = cohort["ids"][0], cohort["ids"][2]
    drawn = sorted(path.name for path in figures.glob("importance_*.png"))
    assert any(name.endswith(f"_{two}_pathology_{two}.png") for name in drawn), drawn
    assert any(name.endswith(f"_{two}_pathology_{two}_B.png") for name in drawn), drawn
    assert any(name.endswith(f"_{one}_pathology.png") for name in drawn), drawn
    text = (cohort["report"] / "report.html").read_text()
    assert f"{two}, pathology: not drawn" not in text

