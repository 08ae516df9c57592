"""Node importance as files that QuPath, 3D Slicer and ITK-SNAP open (``python -m radiopath.export``).

Every patient of a training run is a test patient of one fold, whose model wrote its node
importance to ``RUN/fold{k}/importance/{case_id}.pt`` (modality -> one value per graph node).
Each patch takes its node's value through the graph's ``assignment``
(:func:`radiopath.report.overlays.case_images`), and ``{output}/fold{k}/{case_id}/`` gets:

- ``{slide}.geojson`` per slide (``{slide}`` is the slide file's stem; a patient with several
  slides gets one per slide, and ``export.json`` lists them): a GeoJSON
  ``FeatureCollection`` with one square polygon per tile in level-0 pixels (x right, y down,
  origin at the top-left corner of the full-resolution image), whose properties carry the tile's
  index in the feature file (``tile``), its graph node (``node``, the cluster it belongs to) and
  the node's ``importance``: as plain properties for GIS readers (geopandas, shapely) and as the flat
  ``measurements`` object QuPath imports, with QuPath's ``objectType``, a ``name`` and a ``color``
  (the importance on ``colormap``, the case's own range).
- ``{slide}.png``: those polygons, read from the collection just written, over the slide thumbnail.
- ``{ct}_importance.nii.gz``: a float32 volume on the CT's own grid (size, spacing, origin and
  direction of the manifest's CT), each CT patch's box holding its node's importance (overlapping
  boxes their mean), ``nifti.background`` elsewhere.
- ``export.json``, written last: what was written from what. A patient with one is done.

Files are written atomically; a patient that cannot be exported (no importance file, an image
that does not open, a folder that cannot be written) fails by name and the others go on.
"""

from __future__ import annotations

import json
from pathlib import Path

import geojson
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import SimpleITK as sitk
from matplotlib.collections import PolyCollection
from matplotlib.colors import Normalize
from omegaconf import OmegaConf

from radiopath.data.manifest import Manifest, load_manifest
from radiopath.data.readers import image_stem, open_slide, read_ct
from radiopath.encoders.features import PatchFeatures, starts_outside
from radiopath.entry import StageResult
from radiopath.errors import CaseError, ConfigError, ManifestError, check_choice, check_int, check_number
from radiopath.io import atomic_path, atomic_save_figure, atomic_write_text
from radiopath.layout import FAILURES_NAME, RECORD_NAME, ExportFolder, RunFolder
from radiopath.modality import PATHOLOGY, RADIOLOGY
from radiopath.modality import modality as modality_spec
from radiopath.report.overlays import ImagePatches, case_images, check_node_count, load_importance, paint
from radiopath.report.truth import ct_boxes
from radiopath.repro import active
from radiopath.runner import run_cases

# QuPath's GeoJSON reader (qupath-core, qupath.lib.io.PathObjectTypeAdapters) knows these objectType values;
# another value, or none, imports as an annotation.
OBJECT_TYPES = ("tile", "detection", "annotation")


# --------------------------------------------------------------------------- slides: GeoJSON tiles


def tile_collection(patches: PatchFeatures, node_of_patch: np.ndarray, scores: np.ndarray, *, object_type: str,
                    colormap: str) -> geojson.FeatureCollection:
    """One QuPath-readable polygon feature per tile (level-0 px), with its tile index, node and importance."""
    x0, y0 = patches.coords[:, 0].astype(float), patches.coords[:, 1].astype(float)
    width, height = (float(v) for v in patches.patch_size[:2])
    colours = (matplotlib.colormaps[colormap](_unit_range(scores))[:, :3] * 255).round().astype(int)
    features = []
    for tile, (x, y, node, score, colour) in enumerate(zip(x0, y0, node_of_patch, scores, colours)):
        values = {"tile": tile, "node": int(node), "importance": _shortest(score)}
        # a closed ring, counter-clockwise when y points up (RFC 7946), as the tile's corners
        ring = [(x, y), (x + width, y), (x + width, y + height), (x, y + height), (x, y)]
        properties = {"objectType": object_type, "name": f"node {int(node)}", "color": colour.tolist(),
                      "measurements": values, **values}
        features.append(geojson.Feature(geometry=geojson.Polygon([ring]), properties=properties))
    return geojson.FeatureCollection(features)


def _unit_range(values: np.ndarray) -> np.ndarray:
    """``values`` scaled to [0, 1] over their own range (all 0.5 when they are all equal)."""
    low, high = float(values.min()), float(values.max())
    return np.full(len(values), 0.5) if high <= low else (values - low) / (high - low)


def _shortest(value) -> float:
    # the shortest decimal that reads back as the same float32, not the float32's long float64 expansion
    return float(str(np.float32(value)))


def check_tiles_on_slide(case_id: str, patches: PatchFeatures, slide_path: Path, dimensions: tuple[int, int]) -> None:
    """:class:`CaseError` when tiles start outside the slide: features and slide are not one frame."""
    width, height = dimensions
    outside = int(starts_outside(patches.coords, dimensions).sum())
    if outside:
        raise CaseError(case_id, f"{outside} of {len(patches.coords)} tiles start outside the slide {slide_path} "
                                 f"(level 0 {width}x{height} px): the patch features were not made from this slide")


def draw_collection(collection: dict, thumbnail: np.ndarray, dimensions: tuple[int, int], path: Path, *,
                    colormap: str, alpha: float, dpi: int, title: str) -> Path:
    """The collection's polygons over the slide thumbnail, stretched to the level-0 frame; a PNG at ``path``."""
    width, height = dimensions
    polygons = [feature["geometry"]["coordinates"][0] for feature in collection["features"]]
    values = np.array([feature["properties"]["measurements"]["importance"] for feature in collection["features"]])
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), layout="constrained")
    for ax in axes:
        # the thumbnail spans level-0 pixels, so the GeoJSON coordinates are drawn exactly as QuPath places them
        ax.imshow(thumbnail, extent=(0, width, height, 0))
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_xlabel("level-0 x (px)")
    axes[0].set_ylabel("level-0 y (px)")
    tiles = PolyCollection(polygons, array=values, cmap=colormap, norm=Normalize(values.min(), values.max()),
                           alpha=alpha, edgecolors="white", linewidths=0.2)
    axes[1].add_collection(tiles)
    fig.colorbar(tiles, ax=axes[1], fraction=0.046, label="node importance")
    axes[0].set_title("slide thumbnail")
    axes[1].set_title(f"{len(polygons)} GeoJSON tiles coloured by their node's importance")
    fig.suptitle(title)
    return atomic_save_figure(fig, path, dpi)


def export_slide(image: ImagePatches, scores: np.ndarray, folder: Path, cfg) -> dict[str, str]:
    """The slide's GeoJSON tiles and their preview PNG; role -> file written."""
    case_id, patches = image.patches.case_id, image.patches
    slide_path = _image(image, PATHOLOGY.image_column)
    slide = open_slide(slide_path, case_id)
    try:
        dimensions = slide.dimensions
        thumbnail = np.asarray(slide.get_thumbnail((cfg.preview.thumbnail_px,) * 2).convert("RGB"))
    finally:
        slide.close()
    check_tiles_on_slide(case_id, patches, slide_path, dimensions)
    collection = tile_collection(patches, image.nodes, scores, object_type=cfg.geojson.object_type,
                                 colormap=cfg.colormap)
    stem = image_stem(slide_path)
    target = folder / f"{stem}.geojson"
    atomic_write_text(geojson.dumps(collection), target)
    preview = draw_collection(json.loads(target.read_text(encoding="utf-8")), thumbnail, dimensions,
                              folder / f"{stem}.png", colormap=cfg.colormap, alpha=cfg.preview.alpha,
                              dpi=cfg.preview.dpi, title=f"{case_id}: {target.name} over {slide_path.name}")
    return {"slide": str(slide_path), "geojson": target.name, "preview": preview.name}


# --------------------------------------------------------------------------- CT: NIfTI importance map


def check_patches_in_ct(case_id: str, patches: PatchFeatures, ct_path: Path, image: sitk.Image) -> None:
    """:class:`CaseError` when CT patch centres fall off the CT's grid: features and CT are not one frame."""
    lo, extent = ct_boxes(image, patches.coords, patches.patch_size)
    centres = lo + extent / 2
    outside = int((~((centres >= 0) & (centres < image.GetSize())).all(axis=1)).sum())
    if outside:
        raise CaseError(case_id, f"{outside} of {len(centres)} CT patch centres fall outside the CT {ct_path} "
                                 f"({'x'.join(map(str, image.GetSize()))} voxels): the patch features were not "
                                 "made from this CT")


def importance_volume(image: sitk.Image, patches: PatchFeatures, scores: np.ndarray, *,
                      background: float) -> sitk.Image:
    """A float32 image on ``image``'s grid: each patch's box holds its score (mean where boxes overlap)."""
    lo, extent = ct_boxes(image, patches.coords, patches.patch_size)
    size = np.array(image.GetSize())
    hi = lo + extent
    # paint only the patches' bounding box (two voxels wider for paint's rounding): a full-size float64
    # sum and count of a 512 x 512 x 300 CT would take 0.6 GB each
    first = np.clip(np.floor(lo.min(axis=0)).astype(int), 0, size)
    last = np.clip(np.ceil(hi.max(axis=0)).astype(int) + 2, 0, size)
    region = paint(tuple((last - first)[::-1]), lo - first, hi - first, scores)
    volume = np.full(tuple(size[::-1]), background, dtype=np.float32)
    box = tuple(slice(a, b) for a, b in zip(first[::-1], last[::-1]))
    volume[box] = np.where(np.isnan(region), background, region)
    result = sitk.GetImageFromArray(volume)
    result.CopyInformation(image)
    return result


def export_volume(image: ImagePatches, scores: np.ndarray, folder: Path, cfg) -> dict[str, str]:
    """The CT's importance map as NIfTI on the CT's grid; role -> file written."""
    case_id, patches = image.patches.case_id, image.patches
    ct_path = _image(image, RADIOLOGY.image_column)
    image = read_ct(ct_path, case_id)
    check_patches_in_ct(case_id, patches, ct_path, image)
    volume = importance_volume(image, patches, scores, background=float(cfg.nifti.background))
    target = folder / f"{image_stem(ct_path)}_importance.nii.gz"
    with atomic_path(target) as tmp:  # SimpleITK picks NIfTI from the name, which the temporary file keeps
        sitk.WriteImage(volume, str(tmp), useCompression=True)
    return {"ct": str(ct_path), "nifti": target.name}


# modality view -> its writer, as overlays.DRAW picks the drawing
WRITERS = {"slide": export_slide, "volume": export_volume}


def _image(image: ImagePatches, column: str) -> Path:
    """The image file in ``column``; :class:`CaseError` when the manifest names none."""
    try:
        return image.file(column)
    except FileNotFoundError as error:
        raise CaseError(image.patches.case_id, str(error)) from None


# --------------------------------------------------------------------------- one patient


def export_case(case_id: str, *, fold: int, run: RunFolder, data, manifest: Manifest, cfg) -> Path:
    """Every file of one patient, ``export.json`` last; returns the patient's folder."""
    importance_path = run.importance(fold, case_id)
    if not importance_path.is_file():
        raise CaseError(case_id, f"no importance file {importance_path} (test patient of fold {fold})")
    if case_id not in manifest.case_ids:
        raise CaseError(case_id, f"not a usable row of the manifest {manifest.path}")
    try:
        importance = load_importance(importance_path)
    except Exception as error:  # noqa: BLE001 - any damage to the file is this case's problem
        raise CaseError(case_id, f"cannot read {importance_path}: {type(error).__name__}: {error}") from error
    folder = ExportFolder(cfg.output).case(fold, case_id)
    written = {}
    for modality, nodes in importance.items():
        try:
            graph, images = case_images(data.graph_dir, data.features_dir, modality, case_id, manifest=manifest)
            check_node_count(nodes, graph)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise CaseError(case_id, f"{modality}: {importance_path} does not map onto the case's graph and "
                                     f"patches in {data.graph_dir}: {type(error).__name__}: {error}") from error
        write = WRITERS[modality_spec(modality).view]
        try:
            files = [write(image, nodes[image.nodes], folder, cfg) for image in images]
        except OSError as error:  # io names the file it could not write (read-only folder, full disk)
            raise CaseError(case_id, error.strerror or str(error)) from error
        written[modality] = files[0] if len(files) == 1 else files
    done = {"case_id": case_id, "fold": fold, "importance": str(importance_path), "files": written,
            "object_type": cfg.geojson.object_type}
    try:
        atomic_write_text(json.dumps(done, indent=2), ExportFolder(cfg.output).done(fold, case_id))
    except OSError as error:
        raise CaseError(case_id, error.strerror or str(error)) from error
    return folder


# --------------------------------------------------------------------------- the stage


def check_config(cfg) -> tuple[RunFolder, pd.DataFrame]:
    """The run folder and its folds, or :class:`ConfigError` naming the key, before any case is read."""
    run = RunFolder(cfg.run_dir)
    for file in (run.config, run.folds):
        if not file.is_file():
            state = "does not exist" if not run.root.is_dir() else f"has no {file.name}"
            raise ConfigError("run_dir", f"{run.root} {state}: train there first (python -m radiopath.train "
                                         f"output_dir={run.root})")
    if not run.importance_files():
        raise ConfigError("run_dir", f"{run.root} has no importance files (fold{{k}}/importance/*.pt): the Mean "
                                     "aggregator writes none; export an ABMIL or SPARRA run")
    folds = pd.read_csv(run.folds, dtype={"case_id": str})
    unknown = sorted(set(cfg.cases or ()) - set(folds["case_id"]))
    if unknown:
        raise ConfigError("cases", f"not patients of {run.folds}: {', '.join(unknown[:5])}")
    check_choice("geojson.object_type", cfg.geojson.object_type, OBJECT_TYPES)
    check_number("nifti.background", cfg.nifti.background, "(-inf, inf)")
    check_int("preview.thumbnail_px", cfg.preview.thumbnail_px, minimum=16)
    check_number("preview.alpha", cfg.preview.alpha, "[0, 1]")
    check_int("preview.dpi", cfg.preview.dpi, minimum=10)
    if cfg.colormap not in matplotlib.colormaps:
        raise ConfigError("colormap", f"a matplotlib colormap (e.g. inferno, viridis), got {cfg.colormap!r}")
    return run, folds


def run(cfg) -> StageResult:
    """Export every test patient of ``cfg.run_dir`` (or ``cfg.cases``) to ``cfg.output``."""
    run_folder, folds = check_config(cfg)
    record = active()
    record.input(run_folder.root / RECORD_NAME, "training run record")
    record.input(run_folder.folds, "folds.csv")
    data = OmegaConf.load(run_folder.config).data  # cohort paths absolute: the run works from any folder
    record.input(data.manifest, "cohort manifest")
    try:
        manifest = load_manifest(data.manifest, allow_outside=data.get("allow_outside_paths", False))
    except ManifestError as error:
        raise ConfigError("run_dir", f"the cohort of {run_folder.config} cannot be read: {error}") from error
    fold_of = {case_id: int(k) for case_id, k in zip(folds["case_id"], folds["fold"])}
    cases = list(cfg.cases) if cfg.cases else list(fold_of)
    output = Path(cfg.output)
    summary = run_cases(
        "export", cases,
        lambda case_id: export_case(case_id, fold=fold_of[case_id], run=run_folder, data=data, manifest=manifest,
                                    cfg=cfg),
        lambda case_id: ExportFolder(output).done(fold_of[case_id], case_id).is_file(),
        overwrite=cfg.overwrite,
    )
    summary.write_failures(output / FAILURES_NAME)
    return StageResult.of_summaries([summary], output, "overlays")
