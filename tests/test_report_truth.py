"""Planted ground truth on graph nodes and the node-importance AUROC of the report.

Images come from a small demo cohort; the truth masks are written here with known shapes
(rectangles on the slide, a half of the tumour on the CT grid, a tilted half-space on a
CT with an unusual geometry), so every planted fraction is known exactly.
"""

import math

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch_geometric.data import Data

import radiopath.validate.scores as validate_scores
from radiopath.data.demo_cohort import make_demo_cohort
from radiopath.data.manifest import load_manifest
from radiopath.data.readers import open_slide
from radiopath.encoders.features import PatchFeatures
from radiopath.errors import CaseError
from radiopath.graphs import load_graph
from radiopath.graphs.io import save_graph
from radiopath.io import atomic_torch_save
from radiopath.layout import features_path, graph_path
from radiopath.preprocess.ct import preprocess_ct
from radiopath.report import build_report, recovery
from radiopath.report.truth import (CohortTruth, find_truth, importance_auroc, load_mask, node_truth,
                                    patch_fractions)

SMALL = {
    "ct": {"shape": [48, 48, 16], "spacing": [1.6, 1.6, 5.0]},
    "wsi": {"size_px": [1024, 768]},  # not square: catches width/height mix-ups
    "wsi_pattern": {"radius_um": [30.0, 60.0]},
}
TILE = 128
# Planted rectangles on the slide, level-0 px (x0, x1, y0, y1), edges on multiples of 16 px.
RECTANGLES = [(0, 384, 0, 256), (512, 592, 256, 512)]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Three demo patients: their CTs, masks and slides, read through the manifest."""
    root = tmp_path_factory.mktemp("truth_cohort")
    manifest = make_demo_cohort(root, 3, 0, **SMALL)
    return root, pd.read_csv(manifest, dtype={"case_id": str})


def slide_size(root, case_id):
    slide = open_slide(root / "wsi" / f"{case_id}.tif", case_id)
    try:
        return slide.dimensions
    finally:
        slide.close()


def tile_patches(case_id, width, height):
    """Every TILE x TILE tile of the slide (tissue or not), row by row."""
    xs, ys = np.meshgrid(np.arange(0, width, TILE), np.arange(0, height, TILE))
    coords = np.stack([xs.ravel(), ys.ravel()], 1)
    return PatchFeatures(case_id, "pathology", "toy", np.zeros((len(coords), 2)), coords, [TILE, TILE], 0.5)


def tile_nodes(patches, width):
    """Nodes of 2 x 2 tiles."""
    x, y = patches.coords[:, 0] // (2 * TILE), patches.coords[:, 1] // (2 * TILE)
    return (y * (width // (2 * TILE)) + x).astype(int)


def expected_tile_fractions(patches):
    """Share of each tile inside the planted rectangles (they are disjoint)."""
    x, y = patches.coords[:, 0], patches.coords[:, 1]
    total = np.zeros(len(x))
    for x0, x1, y0, y1 in RECTANGLES:
        overlap_x = np.clip(np.minimum(x + TILE, x1) - np.maximum(x, x0), 0, None)
        overlap_y = np.clip(np.minimum(y + TILE, y1) - np.maximum(y, y0), 0, None)
        total += overlap_x * overlap_y
    return total / TILE**2


def rectangle_png(path, width, height, downsample, rows_extra=0):
    mask = np.zeros((height // downsample + rows_extra, width // downsample), np.uint8)
    for x0, x1, y0, y1 in RECTANGLES:
        mask[y0 // downsample:y1 // downsample, x0 // downsample:x1 // downsample] = 255
    Image.fromarray(mask).save(path)


def write_truth_csv(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "truth.csv", index=False)
    return CohortTruth.load(folder / "truth.csv")


def half_tumour_truth(root, case_id, path):
    """The tumour voxels left of its median column, on the CT grid (the CT's geometry)."""
    mask_image = sitk.ReadImage(str(root / "mask" / f"{case_id}.nii.gz"))
    mask = sitk.GetArrayFromImage(mask_image) > 0
    columns = np.nonzero(mask)[2]
    planted = mask & (np.arange(mask.shape[2]) < np.median(columns))[None, None, :]
    image = sitk.GetImageFromArray(planted.astype(np.uint8))
    image.CopyInformation(mask_image)
    sitk.WriteImage(image, str(path))
    return mask_image, mask, planted


def ct_patches(case_id, mask_image, mask):
    """2 x 2 x 1-voxel patches over the tumour: centres in mm, on the CT grid's voxel edges."""
    zyx = np.argwhere(mask[:, ::2, ::2]) * [1, 2, 2]
    centres = np.array([mask_image.TransformContinuousIndexToPhysicalPoint([x + 0.5, y + 0.5, float(z)])
                        for z, y, x in zyx])
    spacing = np.array(mask_image.GetSpacing())
    patches = PatchFeatures(case_id, "radiology", "toy", np.zeros((len(zyx), 2)), centres, spacing * [2, 2, 1])
    return patches, zyx


# --------------------------------------------------------------------------- slides


@pytest.mark.parametrize("downsample", [16, 8])
def test_slide_node_fractions_of_known_rectangles(cohort, tmp_path, downsample):
    root, frame = cohort
    case_id = frame["case_id"].iloc[0]
    width, height = slide_size(root, case_id)
    rectangle_png(tmp_path / "slide.png", width, height, downsample)
    truth = write_truth_csv(tmp_path, [{"case_id": case_id, "wsi_pattern": "slide.png",
                                        "wsi_pattern_downsample": downsample}])
    mask = load_mask(truth, case_id, "pathology", root / "wsi" / f"{case_id}.tif")
    assert mask.downsample == downsample  # from the file sizes
    patches = tile_patches(case_id, width, height)
    fractions = patch_fractions(mask, patches)
    np.testing.assert_allclose(fractions, expected_tile_fractions(patches))
    assert {0.0, 0.625, 1.0} <= set(np.round(fractions, 6))  # partly covered tiles too

    nodes = tile_nodes(patches, width)
    truth_of_nodes = node_truth(case_id, fractions, nodes, int(nodes.max()) + 1, 0.5)
    per_node = width // (2 * TILE)
    assert truth_of_nodes.fraction[0] == 1.0 and truth_of_nodes.planted[0]
    assert truth_of_nodes.fraction[1] == 0.5 and truth_of_nodes.planted[1]  # half its area: planted (>= 0.5)
    assert truth_of_nodes.fraction[per_node + 2] == pytest.approx(0.3125)
    assert not truth_of_nodes.planted[per_node + 2]
    assert truth_of_nodes.planted.sum() == 2


def test_slide_truth_that_does_not_fit_names_the_case(cohort, tmp_path):
    root, frame = cohort
    case_id = frame["case_id"].iloc[0]
    width, height = slide_size(root, case_id)
    slide = root / "wsi" / f"{case_id}.tif"
    rectangle_png(tmp_path / "taller.png", width, height, 16, rows_extra=3)
    rectangle_png(tmp_path / "finer.png", width, height, 8)
    truth = write_truth_csv(tmp_path, [
        {"case_id": case_id, "wsi_pattern": "taller.png", "wsi_pattern_downsample": 16},
        {"case_id": "other", "wsi_pattern": "finer.png", "wsi_pattern_downsample": 16},
    ])
    with pytest.raises(CaseError, match=rf"{case_id}.*taller.png .* does not fit the slide"):
        load_mask(truth, case_id, "pathology", slide)
    with pytest.raises(CaseError, match=r"'other'.*truth.csv states downsample 16"):
        load_mask(truth, "other", "pathology", slide)


# --------------------------------------------------------------------------- CT


def test_ct_patch_fractions_on_the_ct_grid(cohort, tmp_path):
    root, frame = cohort
    case_id = frame["case_id"].iloc[1]
    mask_image, mask, planted = half_tumour_truth(root, case_id, tmp_path / "ct.nii.gz")
    truth = write_truth_csv(tmp_path, [{"case_id": case_id, "ct_pattern": "ct.nii.gz"}])
    patches, zyx = ct_patches(case_id, mask_image, mask)
    fractions = patch_fractions(load_mask(truth, case_id, "radiology", root / "ct" / f"{case_id}.nii.gz"), patches)
    expected = [planted[z, y:y + 2, x:x + 2].mean() for z, y, x in zyx]
    np.testing.assert_allclose(fractions, expected)
    assert (fractions == 1).any() and (fractions == 0).any()


def test_ct_truth_through_resampling_and_cropping(tmp_path):
    """A CT with flipped axes, an offset origin and anisotropic voxels, preprocessed to 1 mm and cropped.

    The truth is a tilted half-space; every patch farther from its plane than a patch and a
    truth voxel reach is wholly in or wholly out.
    """
    shape = (16, 40, 48)  # z, y, x
    spacing, origin, direction = (0.8, 0.9, 2.5), (-120.0, 35.0, 410.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1)
    z, y, x = np.indices(shape)
    tumour = ((x - 24) / 14) ** 2 + ((y - 20) / 12) ** 2 + ((z - 8) / 5) ** 2 <= 1
    physical = np.stack([origin[0] - x * spacing[0], origin[1] - y * spacing[1], origin[2] + z * spacing[2]], -1)
    normal = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])
    centre = physical[8, 20, 24] @ normal + 0.3
    half_space = physical @ normal < centre

    def image_of(array, voxel_spacing=spacing):
        image = sitk.GetImageFromArray(array.astype(np.int16))
        image.SetSpacing(voxel_spacing)
        image.SetOrigin(origin)
        image.SetDirection(direction)
        return image

    ct, mask = image_of(40 + 10 * tumour), image_of(tumour)
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(image_of(half_space), str(tmp_path / "pattern.nii.gz"))
    sitk.WriteImage(image_of(half_space, (0.8, 0.9, 2.0)), str(tmp_path / "other_grid.nii.gz"))
    truth = write_truth_csv(tmp_path, [{"case_id": "odd", "ct_pattern": "pattern.nii.gz"},
                                       {"case_id": "moved", "ct_pattern": "other_grid.nii.gz"}])

    prepared = preprocess_ct("odd", ct, mask, spacing_mm=1.0, margin_mm=5.0, min_component_voxels=10)
    assert prepared.image.GetOrigin() != ct.GetOrigin()  # cropped, resampled: another grid, one frame
    centres = prepared.index_to_mm(np.argwhere(prepared.mask_array()))
    patches = PatchFeatures("odd", "radiology", "toy", np.zeros((len(centres), 2)), centres,
                            prepared.image.GetSpacing())
    fractions = patch_fractions(load_mask(truth, "odd", "radiology", tmp_path / "ct.nii.gz"), patches)
    distance = centres @ normal - centre
    reach = np.linalg.norm([0.5, 0.5, 0.5]) + np.linalg.norm(np.array(spacing) / 2)
    inside, outside = distance < -reach, distance > reach
    assert inside.sum() > 50 and outside.sum() > 50
    assert (fractions[inside] == 1).all() and (fractions[outside] == 0).all()

    with pytest.raises(CaseError, match=r"'moved'.*not on the grid of the CT"):
        load_mask(truth, "moved", "radiology", tmp_path / "ct.nii.gz")
    elsewhere = PatchFeatures("odd", "radiology", "toy", np.zeros((len(centres), 2)), centres + [0, 0, 500],
                              prepared.image.GetSpacing())
    with pytest.raises(CaseError, match=r"'odd'.*patch centres fall outside the truth"):
        patch_fractions(load_mask(truth, "odd", "radiology", tmp_path / "ct.nii.gz"), elsewhere)


# --------------------------------------------------------------------------- nodes, AUROC, no truth


def test_node_fraction_is_the_area_share_of_its_patches():
    truth = node_truth("c", np.array([1.0, 1.0, 0.0, 0.5, 1.0, 0.0, 0.2]), np.array([0, 0, 1, 1, 2, 2, 3]), 4, 0.5)
    np.testing.assert_allclose(truth.fraction, [1.0, 0.25, 0.5, 0.2])
    assert truth.planted.tolist() == [True, False, True, False]
    np.testing.assert_allclose(truth.patch_fraction, [1.0, 1.0, 0.25, 0.25, 0.5, 0.5, 0.2])  # what overlays paint
    with pytest.raises(CaseError, match="'c'.*does not map its patches"):
        node_truth("c", np.ones(3), np.array([0, 0, 2]), 3, 0.5)  # node 1 has no patch


def test_patient_auroc_and_why_a_patient_has_none():
    assert validate_scores.importance_auroc is importance_auroc  # one copy, shared with the benchmark
    planted = np.array([True, True, False, False, False])
    truth = recovery.NodeTruth(planted.astype(float), planted, planted.astype(float))  # one patch a node
    perfect = recovery.score_patient(planted.astype(np.float32), truth)
    assert perfect == {"n_nodes": 5, "n_planted": 2, "auroc": 1.0, "status": recovery.SCORED}
    assert recovery.score_patient(-planted.astype(np.float32), truth)["auroc"] == 0.0
    assert recovery.score_patient(np.zeros(5, np.float32), truth)["auroc"] == 0.5  # uninformative: chance
    rng = np.random.default_rng(0)
    many = np.arange(400) < 100
    noise = recovery.score_patient(rng.random(400).astype(np.float32), recovery.NodeTruth(many * 1.0, many, many * 1.0))
    assert abs(noise["auroc"] - 0.5) < 0.1
    for labels, status in ((np.ones(5, bool), recovery.ALL_PLANTED), (np.zeros(5, bool), recovery.NO_PLANTED)):
        score = recovery.score_patient(np.arange(5, dtype=np.float32), recovery.NodeTruth(labels * 1.0, labels, labels * 1.0))
        assert score["status"] == status and math.isnan(score["auroc"])
    missing = recovery.score_patient(np.arange(5, dtype=np.float32), None)
    assert missing["status"] == recovery.NO_TRUTH and math.isnan(missing["auroc"]) and math.isnan(missing["n_planted"])
    with pytest.raises(ValueError, match="importance has shape"):
        recovery.score_patient(np.arange(4, dtype=np.float32), truth)


def test_summary_averages_scored_patients_only():
    rows = [("A", "scored", 1.0), ("A", "scored", 0.6), ("A", "no planted node", math.nan),
            ("A", "no truth", math.nan), ("B", "all nodes planted", math.nan)]
    patients = pd.DataFrame([{"aggregator": run, "run": run, "modality": "pathology", "status": status,
                              "auroc": auroc} for run, status, auroc in rows])
    summary = recovery.summarise(patients, 3).set_index("aggregator")
    assert summary.loc["A", "auroc_mean"] == pytest.approx(0.8) and summary.loc["A", "n_scored"] == 2
    assert summary.loc["A", "auroc_cell"] == f"0.800 ± {np.std([1.0, 0.6], ddof=1):.3f}"
    assert summary.loc["A", ["n_no_planted_node", "n_no_truth", "n_failed"]].tolist() == [1, 1, 0]
    assert summary.loc["B", "auroc_cell"] == "N/A" and math.isnan(summary.loc["B", "auroc_mean"])
    assert summary.loc["B", "n_all_nodes_planted"] == 1 and summary.loc["B", "n_scored"] == 0


def test_no_truth_is_none_not_zeros(cohort, tmp_path):
    root, frame = cohort
    assert find_truth(tmp_path / "manifest.csv", None) is None
    assert find_truth(root / "manifest.csv", None) == root / "truth" / "truth.csv"  # the demo writes one
    assert find_truth(tmp_path / "manifest.csv", tmp_path / "mine.csv") == tmp_path / "mine.csv"
    case_id = frame["case_id"].iloc[0]
    truth = write_truth_csv(tmp_path, [{"case_id": case_id, "ct_pattern": "", "wsi_pattern": "absent.png"}])
    for case, modality in ((case_id, "radiology"), (case_id, "pathology"), ("unlisted", "pathology")):
        assert truth.file(case, modality) is None
        assert load_mask(truth, case, modality, root / "wsi" / f"{case_id}.tif") is None
    source = recovery.NodeTruthSource(truth, None, 0.5)  # never opens the manifest or the graphs
    assert source.nodes("unlisted", "radiology", str(tmp_path / "no_graphs"), str(tmp_path / "no_features")) is None


# --------------------------------------------------------------------------- the report


def save_case_graph(root, patches, nodes):
    patches.save(features_path(root / "features", patches.modality, "toy", patches.case_id))
    _, nodes = np.unique(nodes, return_inverse=True)
    n_nodes = int(nodes.max()) + 1
    save_graph(Data(x=torch.zeros(n_nodes, 2), edge_index=torch.zeros(2, 0, dtype=torch.long),
                    pos=torch.zeros(n_nodes, patches.coords.shape[1]), assignment=torch.from_numpy(nodes).long(),
                    case_id=patches.case_id, modality=patches.modality, encoder="toy"),
               graph_path(root / "graphs", patches.modality, patches.case_id))


def test_report_scores_importance_against_the_truth(cohort, tmp_path, compose_config):
    """Importance = planted fraction: AUROC 1 where defined; the rest counted by reason, a bad file named."""
    root, frame = cohort
    _, second, third = frame["case_id"]
    width, height = slide_size(root, third)
    folder = tmp_path / "truth"
    folder.mkdir()
    rectangle_png(folder / "third.png", width, height, 16)
    rectangle_png(folder / "second.png", width, height, 16, rows_extra=3)  # does not fit its slide
    half_tumour_truth(root, third, folder / "third_ct.nii.gz")
    truth = write_truth_csv(folder, [{"case_id": third, "ct_pattern": "third_ct.nii.gz", "wsi_pattern": "third.png"},
                                     {"case_id": second, "ct_pattern": "", "wsi_pattern": "second.png"}])
    for case_id in frame["case_id"]:
        patches = tile_patches(case_id, width, height)
        save_case_graph(tmp_path, patches, tile_nodes(patches, width))
        mask_image = sitk.ReadImage(str(root / "mask" / f"{case_id}.nii.gz"))
        ct, zyx = ct_patches(case_id, mask_image, sitk.GetArrayFromImage(mask_image) > 0)
        save_case_graph(tmp_path, ct, (zyx // [1, 4, 4]) @ [10_000, 100, 1])
    run = tmp_path / "run"
    run.mkdir()
    config = {"model": {"name": "sparra"}, "modalities": ["radiology", "pathology"],
              "data": {"manifest": str(root / "manifest.csv"), "graph_dir": str(tmp_path / "graphs"),
                       "features_dir": str(tmp_path / "features")}}
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    pd.DataFrame({"case_id": frame["case_id"], "fold": range(3)}).to_csv(run / "folds.csv", index=False)
    source = recovery.NodeTruthSource(truth, load_manifest(root / "manifest.csv"), 0.5)
    for k, case_id in enumerate(frame["case_id"]):
        importance = {}
        for modality in ("radiology", "pathology"):
            n_nodes = load_graph(graph_path(tmp_path / "graphs", modality, case_id)).num_nodes
            nodes = source.nodes(case_id, modality, str(tmp_path / "graphs"), str(tmp_path / "features")) if (
                case_id == third) else None
            importance[modality] = torch.zeros(n_nodes) if nodes is None else torch.from_numpy(nodes.fraction).float()
        atomic_torch_save(importance, run / f"fold{k}" / "importance" / f"{case_id}.pt")

    out = tmp_path / "report"
    cfg = compose_config("report", [f"run_dirs=[{run}]", f"output={out}", f"truth={truth.path}",
                                    "overlays.n_cases=1", "overlays.thumbnail_px=200", "figures.dpi=40"])
    html = build_report(cfg).read_text()
    summary = pd.read_csv(out / "importance_auroc.csv").set_index("modality")
    assert summary.loc["pathology", "auroc_mean"] == 1.0 and summary.loc["radiology", "auroc_mean"] == 1.0
    assert summary.loc["pathology", ["n_scored", "n_failed", "n_no_truth"]].tolist() == [1, 1, 1]
    assert summary.loc["radiology", ["n_scored", "n_no_truth"]].tolist() == [1, 2]
    patients = pd.read_csv(out / "importance_auroc_patients.csv", dtype={"case_id": str})
    assert len(patients) == 6 and set(patients["fold"]) == {0, 1, 2}
    failed = patients[patients["status"] == "failed"]
    assert failed["case_id"].tolist() == [second] and "does not fit the slide" in failed["reason"].iloc[0]
    assert f"case &#x27;{second}&#x27;" in html and "Planted regions" in html
    # one overlay case: the scored one first, though it sorts last
    assert sorted(p.name for p in (out / "figures").glob("importance_*.png")) == [
        f"importance_run0_run_{third}_pathology.png", f"importance_run0_run_{third}_radiology.png"]
