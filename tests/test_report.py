"""The report on three fabricated runs of one tiny cohort.

- Mean: real survival-stage outputs (run_survival on fabricated vectors), untrained (empty histories), no importance;
- SPARRA: training curves, node importance on fabricated graphs of real demo images, and survival
  outputs whose metric values are planted, so the best cells are known;
- ABMIL: training curves only, no survival stage: a missing piece the report must state.
"""

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from omegaconf import OmegaConf
from torch_geometric.data import Data

from conftest import TINY_DEMO
from radiopath.data.demo_cohort import make_demo_cohort
from radiopath.data.readers import open_slide
from radiopath.encoders.features import PatchFeatures
from radiopath.graphs import load_graph
from radiopath.graphs.io import save_graph
from radiopath.io import atomic_torch_save
from radiopath.layout import features_path, graph_path
from radiopath.report.overlays import case_images, check_node_count, overlay_slices, paint
from radiopath.survival import summarise
from radiopath.survival.stage import run_survival

REPO = Path(__file__).resolve().parents[1]  # the screenshot test runs its scripts/
FAST = [
    "models=[RSF,CoxPH,FSVM]",
    "tuning.inner_folds=3",
    "estimators.RSF.n_estimators=10",
    "estimators.RSF.max_depth=[2,4]",
    "estimators.CoxPH.alpha=[0.1,10.0]",
    "estimators.FSVM.alpha=[0.01,1.0]",
    "metrics.time_grid_size=8",
]
N_PATIENTS, N_IMAGED = 40, 2
# SPARRA's planted fold means: it wins CoxPH's C-index and IBS and loses RSF's C-index; elsewhere 0.6 (IBS 0.2).
PLANTED = {("CoxPH", "c_index"): 0.99, ("CoxPH", "ibs"): 0.01, ("RSF", "c_index"): 0.05}
METRICS = ["c_index", "c_ipcw", "cd_auc", "ibs"]


def fabricate_images(root):
    """Demo CT/slides for two cases, their patch features and graphs (no encoder: random features)."""
    manifest = make_demo_cohort(root / "cohort", N_IMAGED, 5, **TINY_DEMO)
    frame = pd.read_csv(manifest, dtype={"case_id": str})
    rng = np.random.default_rng(1)
    for case_id in frame["case_id"]:
        slide = open_slide(root / "cohort" / "wsi" / f"{case_id}.tif", case_id)
        width, height = slide.dimensions
        slide.close()
        tile = 128
        xs, ys = np.meshgrid(np.arange(0, width, tile), np.arange(0, height, tile))
        coords = np.stack([xs.ravel(), ys.ravel()], 1)
        # nodes: 2 x 2 blocks of tiles
        node_of = (coords[:, 1] // (2 * tile)) * (width // (2 * tile)) + coords[:, 0] // (2 * tile)
        write_case(root, case_id, "pathology", coords, [tile, tile], node_of, rng, level0_mpp=0.5)

        mask_image = sitk.ReadImage(str(root / "cohort" / "mask" / f"{case_id}.nii.gz"))
        zyx = np.argwhere(sitk.GetArrayFromImage(mask_image) > 0)
        zyx = zyx[(zyx[:, 1] % 4 == 0) & (zyx[:, 2] % 4 == 0)]
        centres = np.array([mask_image.TransformIndexToPhysicalPoint([int(x), int(y), int(z)]) for z, y, x in zyx])
        write_case(root, case_id, "radiology", centres, [6.4, 6.4, 5.0], np.arange(len(centres)) // 3, rng)
    return frame


def write_case(root, case_id, modality, coords, patch_size, node_of, rng, level0_mpp=None):
    _, node_of = np.unique(node_of, return_inverse=True)
    PatchFeatures(case_id, modality, "toy", rng.normal(size=(len(coords), 4)), coords, patch_size,
                  level0_mpp).save(features_path(root / "features", modality, "toy", case_id))
    n_nodes = int(node_of.max()) + 1
    graph = Data(x=torch.zeros(n_nodes, 4), edge_index=torch.zeros(2, 0, dtype=torch.long),
                 pos=torch.zeros(n_nodes, coords.shape[1]), assignment=torch.from_numpy(node_of).long(),
                 case_id=case_id, modality=modality, encoder="toy")
    save_graph(graph, graph_path(root / "graphs", modality, case_id))


def fabricate_cohort(root, imaged):
    """The imaged cases plus survival-only patients in one manifest; folds shared by all runs."""
    rng = np.random.default_rng(0)
    ids = list(imaged["case_id"]) + [f"case{i:03d}" for i in range(N_PATIENTS - len(imaged))]
    signal = rng.normal(size=N_PATIENTS)
    time = np.minimum(rng.exponential(1000 * np.exp(-2.0 * signal)) + 1, 3000).round(1)
    event = ((rng.random(N_PATIENTS) < 0.8) & (time < 3000)).astype(int)
    extra = pd.DataFrame({"case_id": ids[len(imaged):], "os_time": time[len(imaged):], "os_event": event[len(imaged):]})
    imaged = imaged.assign(os_time=time[:len(imaged)], os_event=event[:len(imaged)])
    manifest = root / "cohort" / "manifest.csv"
    pd.concat([imaged, extra]).to_csv(manifest, index=False)
    return manifest, pd.DataFrame({"case_id": ids, "fold": np.arange(N_PATIENTS) % 5}), signal


def write_run(run_dir, name, manifest, root, folds, signal=None, epochs=0):
    """config.yaml, folds.csv and per fold history.csv (+ vectors.csv when ``signal`` is given)."""
    run_dir.mkdir(parents=True)
    config = {"model": {"name": name, "kwargs": {}}, "modalities": ["radiology", "pathology"], "seed": 0,
              "data": {"name": "toy", "manifest": str(manifest), "graph_dir": str(root / "graphs"),
                       "features_dir": str(root / "features"), "time_unit": "days"},
              "training": {"epochs": epochs, "lr": 3e-4}}
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    folds.to_csv(run_dir / "folds.csv", index=False)
    rng = np.random.default_rng(len(name))
    for k in range(5):
        fold_dir = run_dir / f"fold{k}"
        fold_dir.mkdir()
        epoch = np.arange(1, epochs + 1)
        pd.DataFrame({"epoch": epoch, "loss": 3 / epoch + rng.random(epochs) * 0.1, "cox": 3 / epoch, "lr": 3e-4,
                      "train_c_index": 0.5 + 0.4 * epoch / max(epochs, 1),
                      "test_c_index": 0.5 + 0.2 * epoch / max(epochs, 1) + rng.normal(0, 0.02, epochs)},
                     columns=["epoch", "loss", "cox", "lr", "train_c_index", "test_c_index"]).to_csv(
            fold_dir / "history.csv", index=False)
        if signal is not None:
            vectors = rng.normal(size=(N_PATIENTS, 3))
            vectors[:, 0] = signal + 0.3 * rng.normal(size=N_PATIENTS)
            table = pd.DataFrame(vectors, columns=["v0", "v1", "v2"])
            table.insert(0, "risk", np.nan)
            table.insert(0, "split", np.where(folds["fold"] == k, "test", "train"))
            table.insert(0, "case_id", folds["case_id"])
            table.to_csv(fold_dir / "vectors.csv", index=False)


def plant_survival(source, target):
    """SPARRA's survival outputs: the Mean run's files with the metric values replaced by planted ones."""
    shutil.copytree(source, target)
    metrics = pd.read_csv(source / "metrics.csv")
    rng = np.random.default_rng(3)
    for (model, metric), rows in metrics.groupby(["model", "metric"]):
        if metrics.loc[rows.index, "value"].isna().all():
            continue  # keep FSVM's N/A IBS
        centre = PLANTED.get((model, metric), 0.2 if metric == "ibs" else 0.6)
        metrics.loc[rows.index, "value"] = centre + rng.normal(0, 0.005, len(rows))
    metrics.to_csv(target / "metrics.csv", index=False)
    summarise(metrics).to_csv(target / "summary.csv", index=False)


@pytest.fixture(scope="module")
def report(compose_config, run_command, tmp_path_factory):
    """Three runs and ``python -m radiopath.report`` on them, as a user runs it."""
    root = tmp_path_factory.mktemp("report")
    imaged = fabricate_images(root)
    manifest, folds, signal = fabricate_cohort(root, imaged)
    runs = [root / "runs" / name for name in ("mean", "abmil", "sparra")]
    write_run(runs[0], "mean", manifest, root, folds, signal=signal)
    write_run(runs[1], "abmil", manifest, root, folds, epochs=6)
    write_run(runs[2], "sparra", manifest, root, folds, epochs=6)
    run_survival(compose_config("survival", [f"run_dir={runs[0]}", f"data.manifest={manifest}", *FAST]))
    plant_survival(runs[0] / "survival", runs[2] / "survival")
    fold_of = folds.set_index("case_id")["fold"]
    for case_id in imaged["case_id"]:
        importance = {}
        for modality in ("radiology", "pathology"):
            n_nodes = load_graph(graph_path(root / "graphs", modality, case_id)).num_nodes
            importance[modality] = torch.linspace(0, 1, n_nodes)
        atomic_torch_save(importance, runs[2] / f"fold{fold_of[case_id]}" / "importance" / f"{case_id}.pt")
    # a patient with importance but no graphs or images: the report must say so and go on
    atomic_torch_save({"radiology": torch.ones(4)}, runs[2] / f"fold{fold_of['case000']}" / "importance" / "case000.pt")

    out = root / "report"
    run_command("report", f"run_dirs=[{','.join(map(str, runs))}]", f"output={out}", "overlays.thumbnail_px=400",
                "figures.dpi=60", timeout=300)
    return out, runs, imaged


class _Tables(HTMLParser):
    """Rows of every <table>: lists of (text, bold); plus every <img src>."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self._cell, self._bold = [], [], None, False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell, self._bold = "", False
        elif tag == "strong" and self._cell is not None:
            self._bold = True
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append((self._cell.strip(), self._bold))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def table_csv(out):
    return pd.read_csv(out / "table.csv", dtype=str, keep_default_na=False)


def parsed(out):
    parser = _Tables()
    parser.feed((out / "report.html").read_text())
    return parser


def comparison_rows(out):
    """Table 1 from the HTML: {(model, aggregator): [(cell, bold) per metric]} (rowspan filled in)."""
    table = next(t for t in parsed(out).tables if t[0][0][0] == "Survival model")
    rows, model = {}, None
    for row in table[1:]:
        if len(row) == 2 + len(METRICS):
            model = row[0][0]
            row = row[1:]
        rows[model, row[0][0]] = row[1:]
    return rows


@pytest.mark.slow
def test_table_holds_the_summary_numbers(report):
    out, runs, _ = report
    html_rows = comparison_rows(out)
    csv = table_csv(out)
    labels = {"mean": "Mean (radiology+pathology)", "sparra": "SPARRA (radiology+pathology)"}
    assert set(csv["aggregator"]) == set(labels.values())  # ABMIL has no survival outputs
    for run in (runs[0], runs[2]):
        summary = pd.read_csv(run / "survival" / "summary.csv")
        for _, s in summary.iterrows():
            if s["n_folds"] == 0:
                continue
            expected = f"{s['mean']:.3f} ± {s['std']:.3f}"
            cell, _ = html_rows[s["model"], labels[run.name]][METRICS.index(s["metric"])]
            assert cell == expected
            row = csv[(csv["survival_model"] == s["model"]) & (csv["aggregator"] == labels[run.name])].iloc[0]
            assert row[f"{s['metric']}_cell"] == expected
            assert float(row[f"{s['metric']}_mean"]) == pytest.approx(s["mean"])


@pytest.mark.slow
def test_best_cells_are_marked(report):
    out, _, _ = report
    rows = comparison_rows(out)
    sparra, mean = "SPARRA (radiology+pathology)", "Mean (radiology+pathology)"
    # planted: SPARRA highest CoxPH C-index and lowest CoxPH IBS, lowest RSF C-index
    assert rows["CoxPH", sparra][0][1] and not rows["CoxPH", mean][0][1]
    assert rows["CoxPH", sparra][3][1] and not rows["CoxPH", mean][3][1]
    assert rows["RSF", mean][0][1] and not rows["RSF", sparra][0][1]
    csv = table_csv(out)
    for _, row in csv.iterrows():
        for i, metric in enumerate(METRICS):
            assert rows[row["survival_model"], row["aggregator"]][i][1] == (row[f"{metric}_best"] == "True")


@pytest.mark.slow
def test_fsvm_ibs_is_na(report):
    out, _, _ = report
    for (model, _), cells in comparison_rows(out).items():
        assert (cells[3][0] == "N/A") == (model == "FSVM")
    csv = table_csv(out)
    fsvm = csv[csv["survival_model"] == "FSVM"]
    assert (fsvm["ibs_cell"] == "N/A").all() and (fsvm["ibs_best"] == "False").all()


@pytest.mark.slow
def test_markdown_matches_csv(report):
    out, _, _ = report
    lines = (out / "table.md").read_text().splitlines()
    assert lines[0].startswith("| Survival model | Aggregator | C-index ↑")
    csv = table_csv(out)
    assert len(lines) == 2 + len(csv)
    for line, (_, row) in zip(lines[2:], csv.iterrows()):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:2] == [row["survival_model"], row["aggregator"]]
        for cell, metric in zip(cells[2:], METRICS):
            bold = row[f"{metric}_best"] == "True"
            assert cell == (f"**{row[f'{metric}_cell']}**" if bold else row[f"{metric}_cell"])


@pytest.mark.slow
def test_every_image_exists_and_each_figure_kind_is_there(report):
    out, _, imaged = report
    images = parsed(out).images
    for src in images:
        assert not src.startswith(("/", "data:")) and (out / src).stat().st_size > 2_000, src
    names = {Path(src).name for src in images}
    assert {"metrics_box.png", "metrics_bar.png"} <= names
    for model in ("RSF", "CoxPH", "FSVM"):
        assert {f"km_run0_mean_{model}.png", f"km_run2_sparra_{model}.png"} <= names
    assert {"training_run1_abmil.png", "training_run2_sparra.png"} <= names
    assert not any(name.startswith("training_run0") for name in names)
    for case_id in imaged["case_id"]:
        for modality in ("radiology", "pathology"):
            assert f"importance_run2_sparra_{case_id}_{modality}.png" in names


@pytest.mark.slow
def test_missing_pieces_and_settings_are_stated(report):
    out, runs, _ = report
    text = (out / "report.html").read_text()
    assert f"no survival outputs in {runs[1] / 'survival'}" in text
    assert "ABMIL (radiology+pathology): no survival outputs, not in the table" in text
    assert "the Mean aggregator is not trained" in text
    assert "no node-importance files" in text
    assert "SPARRA (radiology+pathology), case000, radiology: not drawn (FileNotFoundError" in text
    settings = json.loads((runs[0] / "survival" / "settings.json").read_text())
    assert f"{settings['folds']['0']['tau']:.4g}" in text  # τ of fold 0
    assert "Harrell" in text and "inverse probability of censoring" in text


@pytest.mark.slow
def test_planted_truth_beside_the_manifest_is_scored(report):
    out, _, imaged = report
    summary = pd.read_csv(out / "importance_auroc.csv")
    assert sorted(summary["modality"]) == ["pathology", "radiology"]
    assert (summary["aggregator"] == "SPARRA (radiology+pathology)").all()
    patients = pd.read_csv(out / "importance_auroc_patients.csv", dtype={"case_id": str}).set_index("case_id")
    # the demo's truth.csv lists the imaged cases; case000 has importance but no truth: counted, not scored
    defined = {"scored", "no planted node", "all nodes planted"}
    assert set(patients.loc[list(imaged["case_id"]), "status"]) <= defined
    assert patients.loc["case000", "status"] == "no truth"
    assert summary["n_scored"].sum() == (patients["status"] == "scored").sum()
    text = (out / "report.html").read_text()
    assert "Planted regions" in text and "Mean (radiology+pathology): no node importance, no AUROC" in text


@pytest.mark.slow
def test_patch_importance_follows_the_assignment(report, tmp_path):
    out, runs, imaged = report
    config = OmegaConf.load(runs[2] / "config.yaml")
    case_id = imaged["case_id"].iloc[0]
    nodes = torch.load(runs[2] / "fold0" / "importance" / f"{case_id}.pt", weights_only=True)["pathology"].numpy()
    graph, (image,) = case_images(config.data.graph_dir, config.data.features_dir, "pathology", case_id, manifest=None)
    check_node_count(nodes, graph)
    assert np.array_equal(nodes[image.nodes], nodes[load_graph(graph_path(config.data.graph_dir, "pathology",
                                                                          case_id)).assignment.numpy()])
    assert len(image.nodes) == len(image.patches.coords)
    with pytest.raises(ValueError, match="importance values for a graph"):
        check_node_count(nodes[:-1], graph)


def test_paint_averages_overlapping_boxes_and_slices_stay_in_the_tumour():
    painted = paint((4, 6), np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[2.0, 2.0], [3.0, 4.0]]),
                    np.array([1.0, 3.0]))
    assert painted[0, 0] == 1.0 and painted[1, 1] == 2.0 and painted[3, 2] == 3.0
    assert np.isnan(painted[0, 5]) and np.isnan(painted[3, 0])
    # abutting boxes whose edges carry float noise: no gap, no overlap
    abutting = paint((1, 8), np.array([[1.4999999, 0.0], [3.5000002, 0.0]]), np.array([[3.5000001, 1.0], [5.5, 1.0]]),
                     np.array([1.0, 2.0]))
    assert np.array_equal(abutting[0, 2:6], [1.0, 1.0, 2.0, 2.0]) and np.isnan(abutting[0, [1, 6]]).all()
    mask = np.zeros((10, 3, 3), bool)
    mask[4:8] = True
    assert overlay_slices(mask, 3) == [5, 6, 7]
    assert overlay_slices(mask, 1) == [6] and overlay_slices(mask, 9) == [4, 5, 6, 7]


@pytest.mark.slow
def test_embedded_report_is_one_file(report, tmp_path, compose_config):
    from radiopath.report import build_report

    _, runs, _ = report
    cfg = compose_config("report", [f"run_dirs=[{runs[1]}]", f"output={tmp_path}", "embed_images=true"])
    html = build_report(cfg).read_text()
    assert parsed(tmp_path).images and all(src.startswith("data:image/png;base64,") for src in parsed(tmp_path).images)
    assert "No run has survival outputs" in html and not (tmp_path / "table.csv").exists()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="no chromium (CI)")
def test_screenshot_is_not_blank(report, tmp_path):
    from PIL import Image

    out, _, _ = report
    png = tmp_path / "report.png"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "screenshot_report.py"), str(out / "report.html"),
                           str(png)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert png.stat().st_size > 20_000
    pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert pixels.shape[1] >= 1000 and pixels.std() > 10
