"""``python -m radiopath.export``: QuPath GeoJSON tiles and NIfTI importance maps, read back with the tools' libraries.

A tiny demo cohort gets fabricated patch features and graphs (a 128 px tile grid on each slide, nodes of 2 x 2
tiles; CT patches of 4 x 4 x 1 voxels on every 4th tumour voxel, nodes of 3 patches) and a fabricated run whose
importance files hold distinct positive values per node, so every painted value can be traced to its node.
Of the four patients two export; one has an unreadable slide and one no importance file.
"""

import json
import os
import stat
from pathlib import Path

import geojson
import numpy as np
import pandas as pd
import pytest
import shapely
import SimpleITK as sitk
import torch
from omegaconf import OmegaConf
from PIL import Image
from shapely.geometry import shape
from torch_geometric.data import Data

from conftest import TINY_DEMO
from radiopath.data.demo_cohort import make_demo_cohort
from radiopath.data.readers import open_slide
from radiopath.encoders.features import PatchFeatures
from radiopath.errors import CaseError, ConfigError
from radiopath.graphs import load_graph
from radiopath.graphs.io import save_graph
from radiopath.io import atomic_torch_save
from radiopath.layout import features_path, graph_path
from radiopath.layout import ExportFolder
from radiopath.report.export import check_patches_in_ct, check_tiles_on_slide, run

TILE = 128  # level-0 px
CT_PATCH_VOXELS = 4  # in x and y; one slice in z


def fabricate_case(root, case_id, modality, coords, patch_size, node_of, *, level0_mpp=None):
    """The case's patch-feature file and a graph whose ``assignment`` is ``node_of``; returns the node count."""
    _, node_of = np.unique(node_of, return_inverse=True)
    rng = np.random.default_rng(len(coords))
    PatchFeatures(case_id, modality, "toy", rng.normal(size=(len(coords), 4)), coords, patch_size,
                  level0_mpp).save(features_path(root / "features", modality, "toy", case_id))
    n_nodes = int(node_of.max()) + 1
    save_graph(Data(x=torch.zeros(n_nodes, 4), edge_index=torch.zeros(2, 0, dtype=torch.long),
                    pos=torch.zeros(n_nodes, coords.shape[1]), assignment=torch.from_numpy(node_of).long(),
                    case_id=case_id, modality=modality, encoder="toy"),
               graph_path(root / "graphs", modality, case_id))
    return n_nodes


def fabricate_images(root, frame):
    """Tiles on every slide and patches in every tumour; case id -> modality -> node count."""
    nodes = {}
    for case_id in frame["case_id"]:
        slide = open_slide(root / "cohort" / "wsi" / f"{case_id}.tif", case_id)
        width, height = slide.dimensions
        slide.close()
        xs, ys = np.meshgrid(np.arange(0, width, TILE), np.arange(0, height, TILE))
        coords = np.stack([xs.ravel(), ys.ravel()], 1)
        blocks = (coords[:, 1] // (2 * TILE)) * (width // (2 * TILE)) + coords[:, 0] // (2 * TILE)
        slide_nodes = fabricate_case(root, case_id, "pathology", coords, [TILE, TILE], blocks, level0_mpp=0.5)

        mask = sitk.ReadImage(str(root / "cohort" / "mask" / f"{case_id}.nii.gz"))
        zyx = np.argwhere(sitk.GetArrayFromImage(mask) > 0)
        zyx = zyx[(zyx[:, 1] % CT_PATCH_VOXELS == 0) & (zyx[:, 2] % CT_PATCH_VOXELS == 0)]
        centres = np.array([mask.TransformIndexToPhysicalPoint([int(x), int(y), int(z)]) for z, y, x in zyx])
        size_mm = [CT_PATCH_VOXELS * mask.GetSpacing()[0], CT_PATCH_VOXELS * mask.GetSpacing()[1],
                   mask.GetSpacing()[2]]
        ct_nodes = fabricate_case(root, case_id, "radiology", centres, size_mm, np.arange(len(centres)) // 3)
        nodes[case_id] = {"pathology": slide_nodes, "radiology": ct_nodes}
    return nodes


@pytest.fixture(scope="module")
def exported(tmp_path_factory, run_command):
    """The run, its export as a user starts it, and which patient plays which part."""
    root = tmp_path_factory.mktemp("export")
    manifest = make_demo_cohort(root / "cohort", 4, 7, **TINY_DEMO)
    frame = pd.read_csv(manifest, dtype={"case_id": str})
    nodes = fabricate_images(root, frame)
    good, bad_slide, no_importance = list(frame["case_id"][:2]), frame["case_id"][2], frame["case_id"][3]

    run_dir = root / "run"
    run_dir.mkdir()
    config = {"model": {"name": "sparra"}, "modalities": ["radiology", "pathology"],
              "data": {"manifest": str(manifest), "graph_dir": str(root / "graphs"),
                       "features_dir": str(root / "features")}}
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    folds = pd.DataFrame({"case_id": frame["case_id"], "fold": [0, 1, 0, 1]})
    folds.to_csv(run_dir / "folds.csv", index=False)
    rng = np.random.default_rng(0)
    importance = {}
    for case_id, fold in zip(folds["case_id"], folds["fold"]):
        importance[case_id] = {m: torch.from_numpy(rng.uniform(0.1, 1.0, n).astype(np.float32))
                               for m, n in nodes[case_id].items()}
        if case_id != no_importance:
            atomic_torch_save(importance[case_id], run_dir / f"fold{fold}" / "importance" / f"{case_id}.pt")
    (root / "cohort" / "wsi" / f"{bad_slide}.tif").write_bytes(b"not a slide")

    done = run_command("export", f"run_dir={run_dir}", "preview.thumbnail_px=256", "preview.dpi=50", check=False)
    return {"root": root, "run": run_dir, "out": run_dir / "export", "done": done, "frame": frame,
            "folds": folds.set_index("case_id")["fold"], "importance": importance, "good": good,
            "bad_slide": bad_slide, "no_importance": no_importance}


def case_files(exported, case_id):
    export, fold = ExportFolder(exported["out"]), exported["folds"][case_id]
    return export.case(fold, case_id), json.loads(export.done(fold, case_id).read_text())


def test_bad_patients_fail_by_name_and_file_and_the_others_complete(exported):
    done = exported["done"]
    assert done.returncode == 1, done.stderr[-3000:]
    assert "export: 2 done, 0 skipped (already done), 2 failed" in done.stdout
    bad_slide, missing = exported["bad_slide"], exported["no_importance"]
    slide = exported["root"] / "cohort" / "wsi" / f"{bad_slide}.tif"
    assert f"FAILED {bad_slide}: cannot open slide {slide}" in done.stdout
    importance = exported["run"] / f"fold{exported['folds'][missing]}" / "importance" / f"{missing}.pt"
    assert f"FAILED {missing}: no importance file {importance}" in done.stdout
    failures = pd.read_csv(exported["out"] / "failures.csv")
    assert sorted(failures["case_id"]) == sorted([bad_slide, missing])
    for case_id in exported["good"]:
        _, record = case_files(exported, case_id)
        assert set(record["files"]) == {"pathology", "radiology"}
    assert not ExportFolder(exported["out"]).done(exported["folds"][bad_slide], bad_slide).exists()


def test_geojson_holds_one_polygon_per_tile_with_its_node_and_importance(exported):
    for case_id in exported["good"]:
        folder, record = case_files(exported, case_id)
        with open(folder / record["files"]["pathology"]["geojson"], encoding="utf-8") as handle:
            collection = geojson.load(handle)
        assert collection.is_valid and collection["type"] == "FeatureCollection"
        patches = PatchFeatures.load(features_path(exported["root"] / "features", "pathology", "toy", case_id))
        assignment = load_graph(graph_path(exported["root"] / "graphs", "pathology", case_id)).assignment.numpy()
        nodes = exported["importance"][case_id]["pathology"].numpy()
        features = collection["features"]
        assert len(features) == len(patches.coords) == 64
        polygons = [shape(feature["geometry"]) for feature in features]
        for feature, polygon, (x, y) in zip(features, polygons, patches.coords):
            assert polygon.is_valid and polygon.area == TILE * TILE
            assert polygon.bounds == (x, y, x + TILE, y + TILE)  # level-0 px, top-left corner first
            properties = feature["properties"]
            measurements = properties["measurements"]
            assert properties["objectType"] == "tile"
            assert all(isinstance(v, (int, float)) for v in measurements.values())  # flat: name -> number
            tile, node = measurements["tile"], measurements["node"]
            assert node == assignment[tile] and np.float32(measurements["importance"]) == nodes[node]
            assert properties["node"] == node and properties["importance"] == measurements["importance"]
            assert len(properties["color"]) == 3 and all(0 <= c <= 255 for c in properties["color"])
        assert [f["properties"]["tile"] for f in features] == list(range(len(features)))
        # the tiles are the grid: no overlap, no gap, the slide's extent
        union = shapely.union_all(polygons)
        assert union.area == len(polygons) * TILE * TILE
        assert union.bounds == (0, 0, 1024, 1024)


def test_preview_draws_the_tiles_over_the_thumbnail(exported):
    for case_id in exported["good"]:
        folder, record = case_files(exported, case_id)
        pixels = np.asarray(Image.open(folder / record["files"]["pathology"]["preview"]).convert("RGB"), dtype=float)
        assert pixels.shape[0] > 150 and pixels.shape[1] > 300
        left, right = pixels[:, : pixels.shape[1] // 2], pixels[:, pixels.shape[1] // 2:]
        assert left.std() > 10 and np.abs(left.mean(axis=(0, 1)) - right.mean(axis=(0, 1))).max() > 5


def test_nifti_map_lies_on_the_ct_grid_and_paints_each_patch_with_its_node(exported):
    for case_id in exported["good"]:
        folder, record = case_files(exported, case_id)
        ct = sitk.ReadImage(record["files"]["radiology"]["ct"])
        painted = sitk.ReadImage(str(folder / record["files"]["radiology"]["nifti"]))
        assert painted.GetSize() == ct.GetSize()
        np.testing.assert_allclose(painted.GetSpacing(), ct.GetSpacing())
        np.testing.assert_allclose(painted.GetOrigin(), ct.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(painted.GetDirection(), ct.GetDirection(), atol=1e-6)
        volume = sitk.GetArrayFromImage(painted)
        patches = PatchFeatures.load(features_path(exported["root"] / "features", "radiology", "toy", case_id))
        assignment = load_graph(graph_path(exported["root"] / "graphs", "radiology", case_id)).assignment.numpy()
        nodes = exported["importance"][case_id]["radiology"].numpy()
        covered = np.zeros(volume.shape, bool)
        half = CT_PATCH_VOXELS // 2
        for centre, node in zip(patches.coords, assignment):
            x, y, z = ct.TransformPhysicalPointToIndex(centre.astype(float).tolist())
            # a 4-voxel box centred on voxel x spans voxels x-1 .. x+2
            box = (z, slice(y - half + 1, y + half + 1), slice(x - half + 1, x + half + 1))
            assert np.all(volume[box] == nodes[node])
            covered[box] = True
        assert covered.sum() == len(patches.coords) * CT_PATCH_VOXELS ** 2  # the boxes do not overlap
        assert np.all(volume[~covered] == 0.0)


def test_patches_off_their_image_fail_the_patient_naming_the_image(exported):
    case_id = exported["good"][0]
    cohort = exported["root"] / "cohort"
    tiles = PatchFeatures.load(features_path(exported["root"] / "features", "pathology", "toy", case_id))
    tiles.coords[:3] += 1024
    slide = cohort / "wsi" / f"{case_id}.tif"
    with pytest.raises(CaseError, match=rf"3 of 64 tiles start outside the slide {slide} \(level 0 1024x1024 px\)"):
        check_tiles_on_slide(case_id, tiles, slide, (1024, 1024))
    patches = PatchFeatures.load(features_path(exported["root"] / "features", "radiology", "toy", case_id))
    patches.coords[:5, 2] += 1000.0  # mm: far above the volume
    ct = cohort / "ct" / f"{case_id}.nii.gz"
    with pytest.raises(CaseError, match=rf"5 of {len(patches.coords)} CT patch centres fall outside the CT {ct} "):
        check_patches_in_ct(case_id, patches, ct, sitk.ReadImage(str(ct)))


def test_a_rerun_skips_exported_patients(exported, compose_config):
    folder, record = case_files(exported, exported["good"][0])
    target = folder / record["files"]["pathology"]["geojson"]
    before = target.stat().st_mtime_ns
    result = run(compose_config("export", [f"run_dir={exported['run']}", "preview.thumbnail_px=256"]))
    assert result.lines[0].startswith("export: 0 done, 2 skipped (already done), 2 failed")
    assert target.stat().st_mtime_ns == before


@pytest.mark.parametrize("blocked", ["read-only folder", "a file in the folder's place"])
def test_a_folder_that_cannot_be_written_fails_that_patient_naming_the_file(exported, compose_config, tmp_path,
                                                                            blocked):
    first, second = exported["good"]
    out = tmp_path / "out"
    folder = ExportFolder(out).case(exported["folds"][first], first)
    if blocked == "read-only folder":
        folder.mkdir(parents=True)
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
        if os.access(folder, os.W_OK):
            folder.chmod(stat.S_IRWXU)
            pytest.skip("running as root: a read-only folder stays writable")
    else:
        folder.parent.mkdir(parents=True)
        folder.write_text("")
    try:
        result = run(compose_config("export", [f"run_dir={exported['run']}", f"output={out}",
                                               f"cases=[{first},{second}]", "preview.thumbnail_px=256"]))
    finally:
        if folder.is_dir():
            folder.chmod(stat.S_IRWXU)
    (failure,) = result.failures
    slide = Path(exported["frame"].set_index("case_id").at[first, "wsi"])
    assert failure.startswith(f"export: {first}: cannot write {folder / slide.stem}.geojson: ")
    assert ExportFolder(out).done(exported["folds"][second], second).is_file()


def test_a_run_without_importance_a_cohort_or_with_a_typo_stops_before_any_case(exported, compose_config, tmp_path):
    mean = tmp_path / "mean"
    mean.mkdir()
    for name in ("config.yaml", "folds.csv"):
        (mean / name).write_bytes((exported["run"] / name).read_bytes())
    with pytest.raises(ConfigError, match=r"run_dir: .*has no importance files.*Mean"):
        run(compose_config("export", [f"run_dir={mean}"]))
    with pytest.raises(ConfigError, match=r"geojson.object_type: one of tile, detection, annotation, got 'tiles'"):
        run(compose_config("export", [f"run_dir={exported['run']}", "geojson.object_type=tiles"]))
    with pytest.raises(ConfigError, match=r"cases: not patients of .*folds.csv: nobody"):
        run(compose_config("export", [f"run_dir={exported['run']}", "cases=[nobody]"]))
    moved = tmp_path / "moved"
    (moved / "fold0" / "importance").mkdir(parents=True)
    config = OmegaConf.load(exported["run"] / "config.yaml")
    config.data.manifest = str(tmp_path / "gone" / "manifest.csv")
    OmegaConf.save(config, moved / "config.yaml")
    (moved / "folds.csv").write_bytes((exported["run"] / "folds.csv").read_bytes())
    (moved / "fold0" / "importance" / "x.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"run_dir: the cohort of .*config.yaml cannot be read: manifest not found"):
        run(compose_config("export", [f"run_dir={moved}"]))
