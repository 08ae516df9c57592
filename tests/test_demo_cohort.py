from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import pytest
import SimpleITK as sitk
import tifffile
from lifelines import CoxPHFitter
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError
from PIL import Image
from scipy.stats import spearmanr

from radiopath.data import demo_cohort as dc
from radiopath.data.manifest import load_manifest
from radiopath.data.pyramid_tiff import write_pyramidal_tiff
from radiopath.encoders import ENCODERS
from radiopath.encoders.extract import encode_wsi_case
from radiopath.graphs.build import build_graph

# Small images with the default physical field of view; a non-square slide catches
# width/height mix-ups. Pattern blobs shrink so they fit the small slide.
SMALL = {
    "ct": {"shape": [40, 40, 20], "spacing": [2.5, 2.5, 5.0]},
    "wsi": {"size_px": [768, 512]},
    "wsi_pattern": {"radius_um": [30.0, 60.0]},
}
SMALL_OVERRIDES = [
    "ct.shape=[40,40,20]",
    "ct.spacing=[2.5,2.5,5.0]",
    "wsi.size_px=[768,512]",
    "wsi_pattern.radius_um=[30.0,60.0]",
]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return dc.make_demo_cohort(root, 4, 0, **SMALL)


def read_tables(manifest_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_csv(manifest_path), pd.read_csv(manifest_path.parent / "truth" / "truth.csv")


def test_manifest_loads_without_problems_and_paths_are_relative(cohort):
    raw, _ = read_tables(cohort)
    assert list(raw.columns) == [
        "case_id", "ct", "mask", "wsi", "os_time", "os_event", "malignant",
        "isup_grade", "high_grade", "aggressive", "age", "sex", "tumour_size_mm",
        "centre", "tnm_stage", "histology", "dss_time", "dss_event", "rfs_time", "rfs_event",
        "reader_a", "reader_b", "reader_c",
    ]
    assert raw["case_id"].tolist() == ["demo-000", "demo-001", "demo-002", "demo-003"]
    assert all(not Path(p).is_absolute() for column in ("ct", "mask", "wsi") for p in raw[column])
    manifest = load_manifest(cohort, required=("ct", "mask", "wsi", "os_time", "os_event"))
    assert manifest.problems == []
    assert len(manifest.frame) == 4
    for column in ("ct", "mask", "wsi"):
        assert all(Path(p).is_file() for p in manifest.frame[column])


def test_labels_follow_the_rules(cohort):
    raw, _ = read_tables(cohort)
    assert set(raw["os_event"]) <= {0, 1} and (raw["os_time"] >= 1).all()
    assert set(raw["sex"]) <= {"M", "F"} and raw["age"].between(25, 90).all()
    benign, malignant = raw[raw["malignant"] == 0], raw[raw["malignant"] == 1]
    assert len(benign) and len(malignant)  # seed 0 draws both
    assert benign[["isup_grade", "high_grade", "aggressive"]].isna().all().all()
    assert malignant["isup_grade"].between(1, 4).all()
    assert (malignant["high_grade"] == (malignant["isup_grade"] >= 3)).all()
    assert malignant["aggressive"].isin([0, 1]).all()


def test_ct_and_masks_are_readable_with_the_configured_geometry(cohort):
    raw, truth = read_tables(cohort)
    root = cohort.parent
    for row, truth_row in zip(raw.itertuples(), truth.itertuples()):
        ct = sitk.ReadImage(str(root / row.ct))
        mask = sitk.ReadImage(str(root / row.mask))
        pattern = sitk.ReadImage(str(root / "truth" / truth_row.ct_pattern))
        assert ct.GetPixelID() == sitk.sitkInt16 and mask.GetPixelID() == sitk.sitkUInt8
        assert ct.GetSize() == (40, 40, 20)
        assert ct.GetSpacing() == pytest.approx((2.5, 2.5, 5.0))
        for other in (mask, pattern):
            assert other.GetSize() == ct.GetSize() and other.GetSpacing() == ct.GetSpacing()
            assert other.GetOrigin() == ct.GetOrigin() and other.GetDirection() == ct.GetDirection()
        image, tumour, planted = (sitk.GetArrayFromImage(i) for i in (ct, mask, pattern))
        assert tumour.sum() > 0 and set(np.unique(tumour)) <= {0, 1}
        assert image[0, 0, 0] < -900  # air in the corner
        assert not (planted & ~tumour.astype(bool)).any()  # patterns lie inside the tumour
        assert planted.any() == (truth_row.n_ct_regions > 0)
        assert planted.sum() / tumour.sum() == pytest.approx(truth_row.ct_pattern_fraction, abs=1e-6)


def test_tumour_size_is_the_largest_diameter_of_the_mask(cohort):
    raw, _ = read_tables(cohort)
    for row in raw.itertuples():
        points = np.argwhere(sitk.GetArrayFromImage(sitk.ReadImage(str(cohort.parent / row.mask))))
        extent_mm = (points.max(0) - points.min(0)) * np.array([5.0, 2.5, 2.5])
        assert extent_mm.max() - 0.05 <= row.tumour_size_mm <= np.linalg.norm(extent_mm) + 0.05


def test_max_diameter_of_a_box():
    mask = np.zeros((4, 6, 12), np.uint8)
    mask[1:3, 1:5, 1:11] = 1  # 2 x 4 x 10 voxels (z, y, x)
    spacing_xyz = (1.0, 2.0, 3.0)
    expected = np.sqrt((9 * 1.0) ** 2 + (3 * 2.0) ** 2 + (1 * 3.0) ** 2)
    assert dc.max_diameter_mm(mask, spacing_xyz) == pytest.approx(expected)


def test_slides_open_with_openslide_and_tissue_is_darker(cohort):
    raw, truth = read_tables(cohort)
    for row, truth_row in zip(raw.itertuples(), truth.itertuples()):
        slide = openslide.OpenSlide(str(cohort.parent / row.wsi))
        assert slide.level_count >= 3
        assert slide.dimensions == (768, 512)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5)
        rgb = np.asarray(slide.read_region((0, 0), 1, slide.level_dimensions[1]).convert("RGB"), float)
        grey = rgb.mean(axis=2)
        background = grey >= 235
        assert 0.2 < background.mean() < 0.8
        tissue = rgb[~background]
        assert tissue.mean() < grey[background].mean() - 30
        assert tissue[:, 0].mean() > tissue[:, 1].mean()  # H&E absorbs green most: pink/purple

        planted = np.asarray(Image.open(cohort.parent / "truth" / truth_row.wsi_pattern))
        assert planted.shape == (512 // truth_row.wsi_pattern_downsample, 768 // truth_row.wsi_pattern_downsample)
        assert set(np.unique(planted)) <= {0, 255}
        assert planted.any() == (truth_row.n_wsi_regions > 0)


def test_planted_slide_regions_look_darker(cohort):
    _, truth = read_tables(cohort)
    row = truth[truth["n_wsi_regions"] > 0].iloc[0]
    slide = openslide.OpenSlide(str(cohort.parent / "wsi" / f"{row.case_id}.tif"))
    level = slide.get_best_level_for_downsample(row.wsi_pattern_downsample)
    assert slide.level_downsamples[level] == row.wsi_pattern_downsample
    grey = np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]).convert("L"), float)
    planted = np.asarray(Image.open(cohort.parent / "truth" / row.wsi_pattern)) > 0
    other_tissue = (grey < 235) & ~planted
    assert grey[planted].mean() < grey[other_tissue].mean() - 20


def test_same_seed_repeats_and_other_seed_differs(cohort, tmp_path):
    # Patient i depends only on (seed, i): two patients re-drawn equal the first two of four.
    again = dc.make_demo_cohort(tmp_path / "again", 2, 0, **SMALL)
    other = dc.make_demo_cohort(tmp_path / "other", 2, 1, **SMALL)
    first_manifest, first_truth = read_tables(cohort)
    again_manifest, again_truth = read_tables(again)
    other_manifest, other_truth = read_tables(other)
    pd.testing.assert_frame_equal(again_manifest, first_manifest.iloc[:2])
    pd.testing.assert_frame_equal(again_truth, first_truth.iloc[:2])
    assert not np.allclose(other_truth["z"], first_truth["z"].iloc[:2])
    ct = [sitk.GetArrayFromImage(sitk.ReadImage(str(m.parent / "ct/demo-000.nii.gz"))) for m in (cohort, again, other)]
    assert np.array_equal(ct[0], ct[1]) and not np.array_equal(ct[0], ct[2])


def test_log_hazard_rises_with_each_pattern_severity_of_malignant_tumours():
    cfg = dc.demo_config()
    severities = np.linspace(0.5, 1.0, 9)
    assert (np.diff(dc.log_hazard(severities, 0.75, 60, True, cfg)) > 0).all()
    assert (np.diff(dc.log_hazard(0.75, severities, 60, True, cfg)) > 0).all()
    assert dc.log_hazard(0, 0, 60, False, cfg) < dc.log_hazard(0.75, 0.75, 60, True, cfg)


def test_region_count_is_chance_and_severity_follows_the_drive():
    cfg = dc.demo_config()
    designs = [dc.sample_design(np.random.default_rng(s), f"p{i}", cfg)
               for i, s in enumerate(np.random.SeedSequence(3).spawn(600))]
    malignant = [d for d in designs if d.malignant]
    z = np.array([d.z for d in malignant])
    assert abs(spearmanr(z, [d.n_wsi_regions for d in malignant]).statistic) < 0.15
    assert spearmanr(z, [d.wsi_severity for d in malignant]).statistic > 0.5
    assert spearmanr(z, [d.ct_severity for d in malignant]).statistic > 0.5
    severities = np.array([[d.ct_severity, d.wsi_severity] for d in malignant])
    assert (severities >= cfg.wsi_pattern.severity_min).all() and (severities <= 1).all()
    assert all(d.ct_severity == d.wsi_severity == 0 for d in designs if not d.malignant)


def test_truth_log_hazard_is_the_stated_formula(cohort):
    raw, truth = read_tables(cohort)
    cfg = dc.demo_config(**SMALL)
    expected = dc.log_hazard(truth["ct_severity"], truth["wsi_severity"], raw["age"], raw["malignant"], cfg)
    np.testing.assert_allclose(truth["log_hazard"], expected, atol=1e-5)


def sample_many(n: int) -> pd.DataFrame:
    """Outcomes of ``n`` patients (no images), with a stand-in tumour size."""
    cfg = dc.demo_config()
    rows = []
    for i, seed in enumerate(np.random.SeedSequence(7).spawn(n)):
        design_rng, size_rng, outcome_rng, clinical_rng = (np.random.default_rng(s) for s in seed.spawn(4))
        design = dc.sample_design(design_rng, f"p{i}", cfg)
        size = size_rng.uniform(20, 60)
        outcome = dc.sample_outcome(outcome_rng, design, size, cfg)
        clinical = vars(dc.sample_clinical(clinical_rng, design, outcome, size, cfg))
        calls = {f"reader_{name}": call for name, call in clinical.pop("reader_calls").items()}
        rows.append({**vars(design), **vars(outcome), **clinical, **calls, "size": size})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def many():
    return sample_many(2000)


def test_events_and_malignancy_rates(many):
    assert set(many["os_event"]) == {0, 1}
    assert 0.4 < many["os_event"].mean() < 0.8
    assert 0.65 < many["malignant"].mean() < 0.85
    assert (many["os_time_days"] >= 1).all()
    assert many.loc[~many["malignant"], ["n_ct_regions", "n_wsi_regions"]].eq(0).all().all()
    assert many.loc[~many["malignant"], "log_hazard"].mean() < many.loc[many["malignant"], "log_hazard"].mean()


def test_cox_model_recovers_the_planted_coefficients(many):
    cfg = dc.demo_config().survival
    covariates = pd.DataFrame(
        {
            "ct": many["malignant"] * (many["ct_severity"] - cfg.ct_severity_ref[0]) / cfg.ct_severity_ref[1],
            "wsi": many["malignant"] * (many["wsi_severity"] - cfg.wsi_severity_ref[0]) / cfg.wsi_severity_ref[1],
            "age": (many["age"] - cfg.age_ref) / 10,
            "benign": 1.0 - many["malignant"],
            "time": many["os_time_days"],
            "event": many["os_event"],
        }
    )
    fitted = CoxPHFitter().fit(covariates, "time", "event")
    truth = {"ct": cfg.b_ct, "wsi": cfg.b_wsi, "age": cfg.b_age_per_decade, "benign": cfg.b_benign}
    for name, value in truth.items():
        assert abs(fitted.params_[name] - value) < 3.5 * fitted.standard_errors_[name], name
    assert spearmanr(many["log_hazard"], many["os_time_days"]).statistic < -0.3


def test_labels_carry_signal(many):
    malignant = many[many["malignant"]]
    assert set(malignant["isup_grade"]) == {1, 2, 3, 4}
    assert (malignant["high_grade"] == (malignant["isup_grade"] >= 3)).all()
    assert spearmanr(malignant["isup_grade"], malignant["wsi_severity"]).statistic > 0.4
    aggressive = malignant["aggressive"] == 1
    assert 0.25 < aggressive.mean() < 0.75
    assert malignant.loc[aggressive, "z"].mean() > malignant.loc[~aggressive, "z"].mean() + 0.5
    assert many.loc[~many["malignant"], ["isup_grade", "high_grade", "aggressive"]].isna().all().all()


def test_dss_rfs_stage_and_readers_follow_the_stated_model(many):
    cfg = dc.demo_config()
    malignant, benign = many[many["malignant"]], many[~many["malignant"]]
    # A death from the tumour is a death, preceded by a recurrence; benign tumours neither recur nor kill.
    assert (many["dss_event"] <= many["os_event"]).all() and (many["dss_event"] <= many["rfs_event"]).all()
    assert (many["rfs_time_days"] <= many["os_time_days"]).all()
    assert (many["dss_time_days"] == many["os_time_days"]).all()
    assert benign[["dss_event", "rfs_event"]].eq(0).all().all() and benign["tnm_stage"].isna().all()
    assert 0.3 < malignant["dss_event"].mean() < malignant["os_event"].mean()
    assert set(malignant["tnm_stage"]) == {1, 2, 3, 4}
    assert spearmanr(malignant["tnm_stage"], malignant["z"]).statistic > 0.3
    assert malignant.groupby("aggressive")["dss_event"].mean().diff().iloc[-1] > 0.1  # aggressive die more of it
    assert set(many["centre"]) == {"A", "B"} and abs((many["centre"] == "B").mean() - 0.3) < 0.04
    assert set(benign["histology"]) == {"angiomyolipoma"} and "clear_cell" in set(malignant["histology"])
    for name, (sensitivity, specificity) in cfg.readers.items():
        assert abs(malignant[f"reader_{name}"].mean() - sensitivity) < 0.04
        assert abs(1 - benign[f"reader_{name}"].mean() - specificity) < 0.07


def test_unknown_or_inconsistent_parameters_raise():
    with pytest.raises(ConfigKeyError):
        dc.demo_config(ct={"shpe": [10, 10, 10]})
    with pytest.raises(ValueError, match="truth_downsample"):
        dc.demo_config(wsi={"size_px": [1000, 1000]})


def test_smooth_noise_is_standardised_and_correlated():
    field = dc.smooth_noise(np.random.default_rng(0), (64, 96), 8)
    assert field.shape == (64, 96)
    assert abs(field.mean()) < 1e-5 and field.std() == pytest.approx(1, abs=1e-3)
    assert np.corrcoef(field[:, :-1].ravel(), field[:, 1:].ravel())[0, 1] > 0.9


@pytest.mark.slow
def test_hydra_entry_point_writes_a_cohort(run_command, tmp_path):
    out = tmp_path / "cli"
    result = run_command("demo", f"output_dir={out}", "n_patients=2", "seed=3", *SMALL_OVERRIDES, timeout=300)
    assert "Demo cohort: 2 patients" in result.stdout
    manifest = load_manifest(out / "manifest.csv")
    assert manifest.problems == [] and manifest.case_ids == ["demo-000", "demo-001"]
    assert (out / ".hydra").is_dir()
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "truth" / "truth.csv"),
        pd.read_csv(dc.make_demo_cohort(tmp_path / "lib", 2, 3, **SMALL).parent / "truth" / "truth.csv"),
    )


# --- scale of the default demo, CT-only cohorts, slide files ---------------------------------------


def test_default_slide_holds_a_few_hundred_demo_tiles_and_blobs_span_several(compose_config):
    cfg = dc.demo_config()
    tiling = compose_config("build_graphs", ["wsi=demo", "graph/pathology=slidegraph_demo"]).wsi.tiling
    tile_um = tiling.tile_size * tiling.mpp
    grid_tiles = np.prod(np.asarray(cfg.wsi.size_px) * cfg.wsi.mpp // tile_um)
    low, high = (grid_tiles * fraction for fraction in cfg.wsi.tissue_fraction)
    assert 200 <= low and high <= 1000
    assert cfg.wsi_pattern.radius_um[0] >= 2 * tile_um  # the smallest blob still covers whole tiles


def test_demo_graph_settings_keep_a_node_per_one_or_two_tiles(compose_config, tmp_path):
    small = {**SMALL, "wsi": {"size_px": [1536, 1536]}, "wsi_pattern": {"radius_um": [100.0, 150.0]}}
    manifest = dc.make_demo_cohort(tmp_path, 1, 2, **small)
    nodes = {}
    for graph_config in ("slidegraph", "slidegraph_demo"):
        cfg = compose_config("build_graphs", ["wsi=demo", f"graph/pathology={graph_config}"])
        encoder = ENCODERS.create(cfg.encoder.pathology.name, **cfg.encoder.pathology.kwargs)
        patches = encode_wsi_case(
            "demo-000", manifest.parent / "wsi" / "demo-000.tif", encoder,
            OmegaConf.to_container(cfg.wsi.tissue, resolve=True), OmegaConf.to_container(cfg.wsi.tiling, resolve=True),
        )
        nodes[graph_config] = build_graph(patches, **OmegaConf.to_container(cfg.graph.pathology)).num_nodes
    tiles = len(patches.features)
    assert tiles >= 40
    assert nodes["slidegraph_demo"] >= tiles / 2.5
    assert nodes["slidegraph"] < nodes["slidegraph_demo"] / 3  # the published settings merge far more


def test_ct_only_cohort_has_no_slides_and_the_same_outcomes(cohort, tmp_path):
    ct_only = dc.make_demo_cohort(tmp_path / "ct_only", 2, 0, slides=False, **SMALL)
    raw, truth = read_tables(ct_only)
    full_raw, full_truth = read_tables(cohort)
    assert raw["wsi"].isna().all() and truth["wsi_pattern"].isna().all()
    assert not (ct_only.parent / "wsi").exists() and not list((ct_only.parent / "truth").glob("*.png"))
    pd.testing.assert_frame_equal(raw.drop(columns="wsi"), full_raw.drop(columns="wsi").iloc[:2])
    pd.testing.assert_frame_equal(truth.drop(columns="wsi_pattern"), full_truth.drop(columns="wsi_pattern").iloc[:2])
    manifest = load_manifest(ct_only, required=("ct", "mask", "wsi", "os_time", "os_event"))
    assert manifest.problems == [] and manifest.case_ids == ["demo-000", "demo-001"]
    assert manifest.image_path("demo-000", "wsi") is None
    assert "wsi/" not in dc.describe_cohort(ct_only, "days")


def test_pyramid_levels_are_rounded_block_means_and_level_zero_is_lossless(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)  # not a multiple of 4
    path = tmp_path / "noise.tif"
    write_pyramidal_tiff(path, image, 0.5, (1, 2, 4), tile=16, zlib_level=1)
    with tifffile.TiffFile(path) as tiff:
        levels = [page.asarray() for page in tiff.pages]
    np.testing.assert_array_equal(levels[0], image)
    for finer, level in zip(levels, levels[1:]):  # each level halves the one before it
        h, w = finer.shape[0] // 2, finer.shape[1] // 2
        blocks = finer[: h * 2, : w * 2].reshape(h, 2, w, 2, 3)
        np.testing.assert_array_equal(level, np.floor(blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8))
    with pytest.raises(ValueError, match="zlib_level"):
        write_pyramidal_tiff(tmp_path / "bad.tif", image, 0.5, zlib_level=0)
