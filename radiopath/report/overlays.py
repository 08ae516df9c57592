"""Node importance painted back on the image patches it came from, beside the planted truth.

A graph node is a cluster of patches; ``graph.assignment`` gives the node of
every patch in the order of the patch-feature file, so ``importance[assignment]``
is each patch's score and the feature file's ``coords``/``patch_size`` say
where to paint it: level-0 pixels (tile top-left) on a slide thumbnail, mm
(patch centre) on axial CT slices through the tumour. Overlapping patches show
their mean. A patient with several slides has one graph joining them
(:func:`radiopath.graphs.build.join_slide_graphs`); each slide is drawn on its own
(:func:`case_images`). Where the cohort has planted ground truth (:mod:`radiopath.report.truth`),
the pattern is outlined on the importance and a panel beside it paints each patch
with its node's planted fraction: what the node-importance AUROC scores against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import SimpleITK as sitk
import torch
from PIL import Image
from torch_geometric.data import Data

from radiopath.data.manifest import Manifest
from radiopath.data.readers import open_slide, read_ct
from radiopath.encoders.features import PatchFeatures
from radiopath.graphs import load_graph
from radiopath.graphs.io import slide_segments
from radiopath.io import atomic_save_figure
from radiopath.encoders.extract import case_patches
from radiopath.layout import graph_path
from radiopath.modality import MODALITIES, PATHOLOGY, RADIOLOGY
from radiopath.modality import modality as modality_spec
from radiopath.report.truth import TruthMask, ct_boxes


@dataclass
class PatchTruth:
    """The planted truth drawn beside the importance: the case's mask and each patch's node planted fraction."""

    mask: TruthMask
    fraction: np.ndarray


def select_cases(importance_by_run: list[dict[str, Path]], n_cases: int, cases: list[str] | None,
                 preferred: set[str] = frozenset()) -> list[str]:
    """The configured cases, else the first ``n_cases`` that the most runs have importance for.

    Among those, ``preferred`` cases (e.g. with planted and unplanted nodes) come first.
    """
    if cases:
        return list(cases)
    counts: dict[str, int] = {}
    for files in importance_by_run:
        for case_id in files:
            counts[case_id] = counts.get(case_id, 0) + 1
    return sorted(counts, key=lambda case_id: (case_id not in preferred, -counts[case_id], case_id))[:n_cases]


def load_importance(path: Path) -> dict[str, np.ndarray]:
    """modality -> importance of each node of that case's graph."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    return {modality: values.float().numpy().reshape(-1) for modality, values in data.items()}


@dataclass
class ImagePatches:
    """One image of a case (its CT, one of its slides): its files, its patches and each patch's graph node.

    ``name`` is the slide's name where the patient has several slides (else None);
    ``files`` maps the modality's image columns to the manifest's paths (``ct`` and
    ``mask``; ``wsi``), None where it names none; ``nodes`` indexes the case's whole graph.
    """

    name: str | None
    files: dict[str, Path | None]
    patches: PatchFeatures
    nodes: np.ndarray

    def file(self, column: str) -> Path:
        """The image file of ``column``; :class:`FileNotFoundError` when the manifest names none."""
        path = self.files.get(column)
        if path is None:
            raise FileNotFoundError(f"the manifest names no {column} for {self.patches.case_id}")
        return path


def case_images(graph_dir: str, features_dir: str, modality: str, case_id: str, *,
                manifest: Manifest | None) -> tuple[Data, list[ImagePatches]]:
    """The case's graph and its images' patches (one per slide of a patient with several), each patch's node.

    ``manifest``: the run's cohort, which names the images and the feature bags (``pathology_features``)
    some cases' graphs were built from. Raises ``ValueError`` when graph and patches do not fit together.
    """
    graph = load_graph(graph_path(graph_dir, modality, case_id))
    parts = case_patches(case_id, modality, features_dir=features_dir, encoder=graph.encoder, manifest=manifest,
                         fallback_mpp=None)
    segments = slide_segments(graph)
    if len(segments) != len(parts):
        raise ValueError(f"the graph joins {len(segments)} slide(s) but the cohort gives {len(parts)}: rebuild it")
    images = []
    for (name, segment), part, files in zip(segments, parts, _image_files(manifest, case_id, modality, len(parts))):
        nodes = graph.assignment[segment].numpy()
        if len(nodes) != len(part.coords):
            raise ValueError(f"graph assigns {len(nodes)} patches{'' if name is None else f' of slide {name}'} "
                             f"but the feature file has {len(part.coords)}")
        images.append(ImagePatches(name, files, part, nodes))
    return graph, images


def _image_files(manifest: Manifest | None, case_id: str, modality: str, count: int) -> list[dict[str, Path | None]]:
    """The manifest's image files for each of the case's ``count`` images (None where it names none)."""
    spec = modality_spec(modality)
    if manifest is None or case_id not in manifest.case_ids:
        return [dict.fromkeys(spec.image_columns)] * count
    if spec.bag_column is not None:
        slides = manifest.slides(case_id)
        if len(slides) == count:
            return [{spec.image_column: slide.wsi} for slide in slides]
        return [dict.fromkeys(spec.image_columns)] * count
    return [{column: manifest.image_path(case_id, column) for column in spec.image_columns}] * count


def load_case_patches(graph_dir: str, features_dir: str, modality: str, case_id: str, *,
                      manifest: Manifest | None) -> tuple[Data, PatchFeatures]:
    """The graph and patches of a case with one image (planted truth is drawn on one image per case)."""
    graph, images = case_images(graph_dir, features_dir, modality, case_id, manifest=manifest)
    if len(images) != 1:
        raise ValueError(f"case {case_id!r} has {len(images)} slides; planted truth is read for one image per case")
    return graph, images[0].patches


def check_node_count(nodes: np.ndarray, graph: Data) -> None:
    """``ValueError`` unless ``nodes`` holds one value per node of ``graph``."""
    if len(nodes) != graph.num_nodes:
        raise ValueError(f"{len(nodes)} importance values for a graph of {graph.num_nodes} nodes")


def paint(shape: tuple[int, ...], lo: np.ndarray, hi: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over boxes ``[lo, hi)`` on a grid of numpy ``shape``; NaN elsewhere.

    ``lo`` and ``hi`` are ``(N, d)`` in x/y(/z) order and pixel-edge units, ``shape`` is
    ``(rows, cols)`` or ``(z, y, x)``: the reverse order.
    """
    total = np.zeros(shape)
    count = np.zeros(shape)
    size = list(shape[::-1])
    # round half up, after dropping float noise, so that abutting boxes neither overlap nor leave gaps
    start = np.clip(_round_half_up(lo), 0, size)
    stop = np.clip(np.maximum(_round_half_up(hi), start + 1), 0, size)
    for first, last, value in zip(start, stop, values):
        box = tuple(slice(a, b) for a, b in zip(first[::-1], last[::-1]))
        total[box] += value
        count[box] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _round_half_up(values: np.ndarray) -> np.ndarray:
    return np.floor(np.round(values, 3) + 0.5).astype(int)


def _outline(ax, mask: np.ndarray, colour: str) -> None:
    """The planted pattern's contour (nothing to draw on a mask without pattern)."""
    if mask.any():
        ax.contour(mask, levels=[0.5], colors=colour, linewidths=1)


def slide_overlay(image: ImagePatches, scores: np.ndarray, cfg, title: str, path: Path, dpi: int,
                  truth: PatchTruth | None = None) -> Path:
    """Slide thumbnail beside the same thumbnail with each tile painted by its importance (``scores``, per tile).

    With ``truth``: the pattern outlined on the importance, and a third panel of the tiles
    painted with their node's planted fraction.
    """
    patches = image.patches
    slide = open_slide(image.file(PATHOLOGY.image_column), patches.case_id)
    try:
        thumbnail = np.asarray(slide.get_thumbnail((cfg.thumbnail_px, cfg.thumbnail_px)).convert("RGB"))
        scale = np.array([thumbnail.shape[1] / slide.dimensions[0], thumbnail.shape[0] / slide.dimensions[1]])
    finally:
        slide.close()
    corners = patches.coords * scale
    far = corners + patches.patch_size[:2] * scale
    painted = paint(thumbnail.shape[:2], corners, far, scores)
    n_panels = 2 if truth is None else 3
    fig, axes = plt.subplots(1, n_panels, figsize=(5.5 * n_panels, 5.2), layout="constrained")
    plain, overlay = axes[:2]
    for ax in axes:
        ax.imshow(thumbnail)
        ax.set_axis_off()
    image = overlay.imshow(painted, cmap=cfg.colormap, alpha=cfg.alpha, vmin=scores.min(), vmax=scores.max())
    fig.colorbar(image, ax=overlay, fraction=0.046, label="node importance")
    plain.set_title("slide thumbnail")
    overlay.set_title(f"{len(scores)} tiles coloured by their node's importance")
    if truth is not None:
        pattern = Image.fromarray(truth.mask.array.astype(np.uint8) * 255)
        pattern = np.asarray(pattern.resize(thumbnail.shape[1::-1], Image.NEAREST)) > 127
        planted = paint(thumbnail.shape[:2], corners, far, truth.fraction)
        shown = axes[2].imshow(planted, cmap=cfg.truth_colormap, alpha=cfg.alpha, vmin=0, vmax=1)
        fig.colorbar(shown, ax=axes[2], fraction=0.046, label="node planted fraction")
        axes[2].set_title("planted truth: each tile's node planted fraction")
        for ax in axes[1:]:
            _outline(ax, pattern, cfg.truth_colour)
    fig.suptitle(title if truth is None else f"{title} (planted pattern outlined in {cfg.truth_colour})")
    return atomic_save_figure(fig, path, dpi)


def overlay_slices(mask: np.ndarray, n: int) -> list[int]:
    """Up to ``n`` distinct axial indices through the tumour: the middles of ``n`` equal parts of its z-extent."""
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    if len(zs) == 0:
        raise ValueError("the tumour mask is empty")
    return [int(part[len(part) // 2]) for part in np.array_split(zs, min(n, len(zs)))]


def ct_overlay(ct: ImagePatches, scores: np.ndarray, cfg, title: str, path: Path, dpi: int,
               truth: PatchTruth | None = None) -> Path:
    """Axial CT slices through the tumour: mask contour and the patches crossing each slice, painted.

    With ``truth``: the pattern outlined, and a second row of the same slices with the
    patches painted by their node's planted fraction.
    """
    patches, case_id = ct.patches, ct.patches.case_id
    ct_path, mask_path = (ct.file(column) for column in RADIOLOGY.image_columns)
    image = read_ct(ct_path, case_id)
    volume = sitk.GetArrayFromImage(image)  # z, y, x
    mask = sitk.GetArrayFromImage(read_ct(mask_path, case_id)) > 0
    if mask.shape != volume.shape:
        raise ValueError(f"mask {mask.shape} and CT {volume.shape} differ in size")
    lo, extent = ct_boxes(image, patches.coords, patches.patch_size)
    _, ys, xs = np.nonzero(mask)
    margin = np.array(cfg.ct_margin_mm) / np.array(image.GetSpacing()[:2])
    x0, x1 = int(max(xs.min() - margin[0], 0)), int(min(xs.max() + margin[0] + 1, volume.shape[2]))
    y0, y1 = int(max(ys.min() - margin[1], 0)), int(min(ys.max() + margin[1] + 1, volume.shape[1]))
    slices = overlay_slices(mask, cfg.ct_slices)
    aspect = image.GetSpacing()[1] / image.GetSpacing()[0]
    rows = [("node importance", scores, cfg.colormap, scores.min(), scores.max())]
    if truth is not None:
        rows.append(("node planted fraction", truth.fraction, cfg.truth_colormap, 0, 1))

    fig, axes = plt.subplots(len(rows), len(slices), figsize=(4.2 * len(slices) + 1, 4.4 * len(rows)), squeeze=False)
    for row, (label, values, colormap, vmin, vmax) in zip(axes, rows):
        for ax, z in zip(row, slices):
            # voxel z spans [z, z + 1) in the boxes' pixel-edge units
            crossing = (lo[:, 2] <= z + 0.5) & (z + 0.5 <= lo[:, 2] + extent[2])
            start = lo[crossing, :2] - [x0, y0]
            painted = paint((y1 - y0, x1 - x0), start, start + extent[:2], values[crossing])
            ax.imshow(volume[z, y0:y1, x0:x1], cmap="gray", vmin=cfg.ct_window[0], vmax=cfg.ct_window[1],
                      aspect=aspect)
            shown = ax.imshow(painted, cmap=colormap, alpha=cfg.alpha, vmin=vmin, vmax=vmax, aspect=aspect)
            ax.contour(mask[z, y0:y1, x0:x1], levels=[0.5], colors="cyan", linewidths=1)
            if truth is not None:
                _outline(ax, truth.mask.array[z, y0:y1, x0:x1], cfg.truth_colour)
            z_mm = image.TransformIndexToPhysicalPoint((0, 0, int(z)))[2]
            ax.set_title(f"slice {z} (z = {z_mm:.1f} mm), {int(crossing.sum())} patches", fontsize=9)
            ax.set_axis_off()
        fig.colorbar(shown, ax=list(row), fraction=0.03, label=label)
    planted = "" if truth is None else f", planted pattern in {cfg.truth_colour}"
    fig.suptitle(f"{title} (tumour contour in cyan{planted})")
    return atomic_save_figure(fig, path, dpi)


_DRAW_VIEW = {"slide": slide_overlay, "volume": ct_overlay}
# modality name -> its overlay, chosen by the modality's view
DRAW = {spec.name: _DRAW_VIEW[spec.view] for spec in MODALITIES.values()}
