"""HDF5 feature bags (CLAM/Trident layout): read as patch features without encoding, written by encode
(``encode.format=h5``), built into graphs; the slide's resolution rule; a bad bag fails its case only.

The bags here are written with h5py the way Trident's and CLAM's code writes them (facts, not their code):
Trident: ``{job_dir}/20x_256px_0px_overlap/features_{encoder}/{slide}.h5``, datasets ``features`` (N, D) and
``coords`` (N, 2) int64 level-0 top-left pixels, ``coords`` attributes ``patch_size`` (at the target
magnification), ``patch_size_level0``, ``level0_magnification``, ``target_magnification``, ``overlap``, ``name``,
``savetodir``. CLAM's feature bags: the same two datasets (coords int32) and no attributes; its patch files
keep ``patch_size``, ``patch_level`` and ``downsample`` on ``coords``.
"""

import h5py
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import TINY_DEMO
from radiopath.data.demo_cohort import make_demo_cohort
from radiopath.data.manifest import load_manifest
from radiopath.data.pyramid_tiff import write_pyramidal_tiff
from radiopath.data.readers import open_slide, slide_mpp
from radiopath.encoders import stage as encode_stage
from radiopath.encoders.extract import load_bag_case
from radiopath.errors import ManifestError
from radiopath.graphs import load_graph
from radiopath.graphs import stage as graph_stage
from radiopath.layout import bag_path, features_path, graph_path
from radiopath.modality import PATHOLOGY
from radiopath.preprocess.wsi import tile_grid
from radiopath.report.overlays import load_case_patches

TRIDENT_ATTRS = {"patch_size": 256, "patch_size_level0": 512, "level0_magnification": 40,
                 "target_magnification": 20, "overlap": 0}
SLIDE_PX, SLIDE_MPP = 1024, 0.5


def grid(step: int, columns: int, rows: int) -> np.ndarray:
    """Top-left corners of a ``columns`` x ``rows`` grid of ``step``-px patches, row by row."""
    return np.stack(np.meshgrid(np.arange(columns), np.arange(rows)), -1).reshape(-1, 2) * step


def write_h5(path, features, coords, coords_attrs=None, features_attrs=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("features", data=features).attrs.update(features_attrs or {})
        handle.create_dataset("coords", data=coords).attrs.update(coords_attrs or {})
    return path


def trident_bag(job_dir, slide, *, features=None, coords=None, seed=0, **attrs):
    """A Trident patch-feature file for ``slide``: 20x, 256-px patches of a 40x scan (512 level-0 px), UNI."""
    folder = job_dir / "20x_256px_0px_overlap" / "features_uni_v1"
    coords = grid(512, 10, 8).astype(np.int64) if coords is None else coords
    features = np.random.default_rng(seed).normal(size=(len(coords), 6)).astype(np.float32) if features is None \
        else features
    coords_attrs = {**TRIDENT_ATTRS, "name": slide, "savetodir": str(job_dir), **attrs}
    return write_h5(folder / f"{slide}.h5", features, coords, {k: v for k, v in coords_attrs.items() if v is not None},
                    {"name": slide, "savetodir": str(folder)})


def write_manifest(root, rows, *, allow_outside=False):
    """A manifest of ``rows`` (paths relative to ``root``) and the pathology view of it a stage loads."""
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return load_manifest(root / "manifest.csv", required=PATHOLOGY.required_columns, allow_outside=allow_outside)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """A 1024 x 1024 px slide at 0.5 µm/px (OpenSlide reads openslide.mpp-x from its TIFF resolution)."""
    path = tmp_path_factory.mktemp("slide") / "slide.tiff"
    pixels = np.random.default_rng(0).integers(150, 250, (SLIDE_PX, SLIDE_PX, 3)).astype(np.uint8)
    write_pyramidal_tiff(path, pixels, SLIDE_MPP, downsamples=(1, 4))
    return path


def stage_config(compose_config, root, manifest="manifest.csv", *overrides):
    return compose_config("build_graphs", [f"data.manifest={root / manifest}", f"data.features_dir={root / 'features'}",
                                           f"output_dir={root / 'graphs'}", "modalities=[pathology]", *overrides])


def test_a_trident_bag_builds_its_graph_without_slide_or_encoding(compose_config, tmp_path):
    bag = trident_bag(tmp_path / "trident", "TCGA-XX-0001-01Z-00-DX1")
    write_manifest(tmp_path, [{"case_id": "p1", "pathology_features": str(bag.relative_to(tmp_path)),
                               "os_time": 100, "os_event": 1}])
    result = graph_stage.run(stage_config(compose_config, tmp_path))

    assert result.ok, result.lines
    assert not list((tmp_path / "features").rglob("p1.*"))  # nothing was encoded
    graph = load_graph(graph_path(tmp_path / "graphs", "pathology", "p1"))
    assert graph.encoder == "uni_v1" and graph.assignment.shape == (80,)
    with h5py.File(bag) as handle:
        features, coords = handle["features"][()], handle["coords"][()]
    labels = graph.assignment.numpy()
    # 40x is 0.25 µm/px (Trident's mpp = 10 / magnification); a patch's centre is 256 px from its corner
    centres_um = (coords + 256) * 0.25
    nodes = range(graph.num_nodes)
    np.testing.assert_allclose(graph.pos.numpy(), [centres_um[labels == k].mean(0) for k in nodes], rtol=1e-6)
    np.testing.assert_allclose(graph.x.numpy(), [features[labels == k].mean(0) for k in nodes], rtol=1e-5, atol=1e-6)
    # the report and the export map importance onto the same patches, read from the bag
    manifest = load_manifest(tmp_path / "manifest.csv")
    graph_again, patches = load_case_patches(tmp_path / "graphs", tmp_path / "features", "pathology", "p1",
                                             manifest=manifest)
    np.testing.assert_array_equal(patches.coords, coords)
    assert graph_again.num_nodes == graph.num_nodes


def test_encode_writes_bags_trident_reads_and_their_graphs_equal_the_pt_ones(compose_config, tmp_path):
    manifest = make_demo_cohort(tmp_path / "cohort", 1, 3, **TINY_DEMO)
    case_id = pd.read_csv(manifest)["case_id"].iloc[0]
    configs = {fmt: stage_config(compose_config, tmp_path / fmt, manifest, "wsi=demo", f"encode.format={fmt}")
               for fmt in ("pt", "h5")}
    for cfg in configs.values():
        assert graph_stage.run(cfg).ok

    pt = features_path(tmp_path / "pt" / "features", "pathology", "pathomics", case_id)
    h5 = bag_path(tmp_path / "h5" / "features", "pathology", "pathomics", case_id)
    assert pt.is_file() and h5.is_file() and not h5.with_suffix(".pt").exists()
    with h5py.File(h5) as handle:  # read as Trident's slide encoders and CLAM's heatmaps read a bag
        features, coords, attrs = handle["features"][()], handle["coords"][()], dict(handle["coords"].attrs)
    assert features.dtype == np.float32 and features.shape[1] == 22
    assert np.issubdtype(coords.dtype, np.integer) and coords.shape == (len(features), 2)
    assert attrs["patch_size"] == 128 and attrs["patch_size_level0"] == 128  # wsi=demo: 128-px tiles at 0.5 µm/px
    assert attrs["level0_magnification"] == attrs["target_magnification"] == pytest.approx(20.0)
    assert attrs["patch_size_level0"] == attrs["patch_size"] * attrs["level0_magnification"] // \
        attrs["target_magnification"]

    graphs = {fmt: load_graph(graph_path(cfg.output_dir, "pathology", case_id)) for fmt, cfg in configs.items()}
    for key in ("x", "pos", "edge_index", "assignment"):
        assert np.array_equal(graphs["pt"][key].numpy(), graphs["h5"][key].numpy()), key

    # A finished case is not re-encoded when the format changes; overwrite=true rewrites it, leaving one file.
    configs["h5"].encode.format = "pt"
    mtime = h5.stat().st_mtime_ns
    assert encode_stage.encode_modality(configs["h5"], encode_stage.load_modality_manifest(configs["h5"], "pathology"),
                                        "pathology").skipped == [case_id]
    assert h5.stat().st_mtime_ns == mtime
    configs["h5"].overwrite = True
    encode_stage.run(configs["h5"])
    assert h5.with_suffix(".pt").is_file() and not h5.exists()


def test_the_slide_resolution_is_the_mpp_column_then_the_slide_then_the_bag_then_the_fallback(slide, tmp_path):
    bag = trident_bag(tmp_path, "s", coords=grid(128, 8, 8), patch_size=64, patch_size_level0=128)
    bare = write_h5(tmp_path / "bare.h5", np.ones((64, 3), np.float32), grid(128, 8, 8).astype(np.int32))

    def mpp(path, **sources):
        sources = {"wsi_path": None, "mpp": None, "fallback_mpp": None, **sources}
        return load_bag_case("c", path, **sources).level0_mpp

    assert mpp(bag, wsi_path=slide, mpp=0.3, fallback_mpp=0.9) == pytest.approx(0.3)  # the manifest's mpp column
    assert mpp(bag, wsi_path=slide, fallback_mpp=0.9) == pytest.approx(SLIDE_MPP)     # the slide's openslide.mpp-x
    assert mpp(bag, fallback_mpp=0.9) == pytest.approx(0.25)                           # the bag's 40x
    assert mpp(bare, fallback_mpp=0.9) == pytest.approx(0.9)                           # wsi.fallback_mpp

    # When encoding a slide too, the mpp column overrides what the slide records, for every reader of it.
    with open_slide(slide, "c", mpp=0.25) as stated:
        assert slide_mpp(stated, "c") == pytest.approx(0.25)
        tiles = tile_grid(stated, "c", mpp=0.5, tile_size=128, tissue=(np.ones((64, 64), bool), 16.0))
    assert tiles.tile_size_level0 == pytest.approx(256)  # 128 px at 0.5 µm/px is 256 px of a 0.25 µm/px scan


@pytest.mark.parametrize("attrs", [{}, {"patch_size": 32, "patch_level": 1}, {"patch_size": 32, "downsample": [4.0, 4.0]}],
                         ids=["feature-bag", "patch-level", "downsample"])
def test_a_clam_bag_takes_its_patch_size_from_attributes_or_its_grid(slide, tmp_path, attrs):
    coords = grid(128, 8, 8).astype(np.int32)
    path = write_h5(tmp_path / "h5_files" / "s.h5", np.ones((64, 3), np.float32), coords, attrs)
    patches = load_bag_case("c", path, wsi_path=slide, mpp=None, fallback_mpp=None)
    assert patches.level0_mpp == pytest.approx(SLIDE_MPP) and patches.encoder == "unrecorded"
    np.testing.assert_array_equal(patches.patch_size, [128, 128])  # the slide's level 1 is 4x down
    np.testing.assert_array_equal(patches.coords, coords)


def _bad_bags(root, slide):
    """fault -> (bag, manifest row extras, words its failure must contain)."""
    rng = np.random.default_rng(1)
    nan = rng.normal(size=(80, 6)).astype(np.float32)
    nan[3, 2] = np.nan
    root.mkdir(parents=True)
    junk = root / "junk.h5"
    junk.write_bytes(b"not an HDF5 file")
    with h5py.File(root / "features-only.h5", "w") as handle:
        handle["features"] = nan
    return {
        "not-hdf5": (junk, {}, "cannot read feature bag"),
        "no-coords": (root / "features-only.h5", {}, "has no coords dataset (it holds: features)"),
        "lengths": (trident_bag(root, "lengths", features=np.zeros((80, 6), np.float32), coords=grid(512, 10, 8)[:79]),
                    {}, "80 feature rows but 79 coords"),
        "outside": (trident_bag(root, "outside"), {"wsi": str(slide)}, "lie outside the 1024 x 1024 px slide"),
        "no-resolution": (trident_bag(root, "unknown", level0_magnification=None, target_magnification=None), {},
                          "does not say its µm per pixel"),
        "nan": (trident_bag(root, "nan", features=nan), {}, "features contain NaN or inf"),
    }


@pytest.mark.parametrize("fault", ["lengths", "outside", "no-resolution", "nan", "not-hdf5", "no-coords"])
def test_a_bad_bag_fails_its_case_naming_the_file_and_the_others_complete(compose_config, slide, tmp_path, fault):
    cfg = stage_config(compose_config, tmp_path)
    bag, extras, words = _bad_bags(tmp_path / "bags", slide)[fault]
    good = trident_bag(tmp_path / "bags", "good")
    manifest = write_manifest(tmp_path, [{"case_id": "good", "pathology_features": str(good)},
                                         {"case_id": "bad", "pathology_features": str(bag), **extras}],
                              allow_outside=True)  # the slide lies in another test folder
    summary = graph_stage.build_modality_graphs(cfg, manifest.case_ids, "pathology", manifest=manifest)

    assert summary.done == ["good"] and [case for case, _ in summary.failed] == ["bad"]
    reason = summary.failed[0][1]
    assert str(bag) in reason and words in reason
    assert f"FAILED bad: {reason}" in summary.report()
    failures = pd.read_csv(tmp_path / "graphs" / "pathology" / "failures.csv")
    assert failures["case_id"].tolist() == ["bad"]


def test_the_manifest_checks_the_new_columns(tmp_path):
    bag = trident_bag(tmp_path, "s")
    rows = [{"case_id": "ok", "pathology_features": str(bag.relative_to(tmp_path)), "mpp": 0.25},
            {"case_id": "no-file", "pathology_features": "missing.h5", "mpp": ""},
            {"case_id": "bad-mpp", "pathology_features": str(bag.relative_to(tmp_path)), "mpp": -1}]
    manifest = write_manifest(tmp_path, rows)
    assert manifest.case_ids == ["ok"] and manifest.slides("ok")[0].mpp == 0.25
    problems = {p.case_id: p.reason for p in manifest.problems}
    assert problems["no-file"].startswith("pathology_features file not found")
    assert problems["bad-mpp"] == "mpp must be a positive number (µm per level-0 pixel), got -1.0"

    pd.DataFrame([{"case_id": "a", "ct": "a.nii.gz"}]).to_csv(tmp_path / "ct_only.csv", index=False)
    with pytest.raises(ManifestError, match="missing column.s. wsi or pathology_features"):
        load_manifest(tmp_path / "ct_only.csv", required=PATHOLOGY.required_columns)


def test_encode_format_is_checked_before_any_case(compose_config, tmp_path):
    cfg = stage_config(compose_config, tmp_path, "manifest.csv", "encode.format=hdf5")
    with pytest.raises(ValueError, match="encode.format: one of pt, h5, got 'hdf5'"):
        encode_stage.check_config(cfg)
    assert OmegaConf.select(compose_config("encode"), "encode.format") == "pt"
