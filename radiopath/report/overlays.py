"""Node importance painted back on the image patches it came from.

A graph node is a cluster of patches; ``graph.assignment`` gives the node of
every patch in the order of the patch-feature file, so ``importance[assignment]``
is each patch's score and the feature file's ``coords``/``patch_size`` say
where to paint it: level-0 pixels (tile top-left) on a slide thumbnail, mm
(patch centre) on axial CT slices through the tumour. Overlapping patches show
their mean.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import SimpleITK as sitk
import torch

from radiopath.data.manifest import Manifest
from radiopath.data.readers import open_slide, read_ct
from radiopath.encode import encoder_dirname
from radiopath.encoders.features import PatchFeatures, features_path
from radiopath.graphs import graph_path, load_graph
from radiopath.report.plots import save_figure


def select_cases(importance_by_run: list[dict[str, Path]], n_cases: int, cases: list[str] | None) -> list[str]:
    """The configured cases, else the first ``n_cases`` that the most runs have importance for."""
    if cases:
        return list(cases)
    counts: dict[str, int] = {}
    for files in importance_by_run:
        for case_id in files:
            counts[case_id] = counts.get(case_id, 0) + 1
    return sorted(counts, key=lambda case_id: (-counts[case_id], case_id))[:n_cases]


def load_importance(path: Path) -> dict[str, np.ndarray]:
    """modality -> importance of each node of that case's graph."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    return {modality: values.float().numpy().reshape(-1) for modality, values in data.items()}


def patch_importance(graph_dir: str, features_dir: str, modality: str, case_id: str, nodes: np.ndarray):
    """The case's patches (:class:`PatchFeatures`) and each patch's importance (its node's value)."""
    graph = load_graph(graph_path(graph_dir, modality, case_id))
    if len(nodes) != graph.num_nodes:
        raise ValueError(f"{len(nodes)} importance values for a graph of {graph.num_nodes} nodes")
    patches = PatchFeatures.load(features_path(features_dir, modality, encoder_dirname(graph.encoder), case_id))
    assignment = graph.assignment.numpy()
    if len(assignment) != len(patches.coords):
        raise ValueError(f"graph assigns {len(assignment)} patches but the feature file has {len(patches.coords)}")
    return patches, nodes[assignment]


def paint(shape: tuple[int, int], lo: np.ndarray, hi: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over boxes ``[lo, hi)`` (x, y, pixel-edge units) on a ``(rows, cols)`` grid; NaN elsewhere."""
    total = np.zeros(shape)
    count = np.zeros(shape)
    # round half up, after dropping float noise, so that abutting boxes neither overlap nor leave gaps
    start = np.clip(_round_half_up(lo), 0, [shape[1], shape[0]])
    stop = np.clip(np.maximum(_round_half_up(hi), start + 1), 0, [shape[1], shape[0]])
    for (x0, y0), (x1, y1), value in zip(start, stop, values):
        total[y0:y1, x0:x1] += value
        count[y0:y1, x0:x1] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _round_half_up(values: np.ndarray) -> np.ndarray:
    return np.floor(np.round(values, 3) + 0.5).astype(int)


def slide_overlay(manifest: Manifest, case_id: str, patches: PatchFeatures, scores: np.ndarray, cfg, title: str,
                  path: Path, dpi: int) -> Path:
    """Slide thumbnail beside the same thumbnail with each tile painted by its importance."""
    slide_path = manifest.image_path(case_id, "wsi") if "wsi" in manifest.frame.columns else None
    if slide_path is None:
        raise FileNotFoundError(f"the manifest names no slide for {case_id}")
    slide = open_slide(slide_path, case_id)
    try:
        thumbnail = np.asarray(slide.get_thumbnail((cfg.thumbnail_px, cfg.thumbnail_px)).convert("RGB"))
        scale = np.array([thumbnail.shape[1] / slide.dimensions[0], thumbnail.shape[0] / slide.dimensions[1]])
    finally:
        slide.close()
    corners = patches.coords * scale
    painted = paint(thumbnail.shape[:2], corners, corners + patches.patch_size[:2] * scale, scores)
    fig, (plain, overlay) = plt.subplots(1, 2, figsize=(11, 5.2))
    for ax in (plain, overlay):
        ax.imshow(thumbnail)
        ax.set_axis_off()
    image = overlay.imshow(painted, cmap=cfg.colormap, alpha=cfg.alpha, vmin=scores.min(), vmax=scores.max())
    fig.colorbar(image, ax=overlay, fraction=0.046, label="node importance")
    plain.set_title("slide thumbnail")
    overlay.set_title(f"{len(scores)} tiles coloured by their node's importance")
    fig.suptitle(title)
    return save_figure(fig, path, dpi)


def _index_transform(image: sitk.Image) -> np.ndarray:
    """Matrix taking a physical offset from the origin (mm, x/y/z) to continuous voxel index (x/y/z)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.linalg.inv(direction @ np.diag(image.GetSpacing()))


def tumour_slices(mask: np.ndarray, n: int) -> list[int]:
    """Up to ``n`` distinct axial indices through the tumour: the middles of ``n`` equal parts of its z-extent."""
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    if len(zs) == 0:
        raise ValueError("the tumour mask is empty")
    return [int(part[len(part) // 2]) for part in np.array_split(zs, min(n, len(zs)))]


def ct_overlay(manifest: Manifest, case_id: str, patches: PatchFeatures, scores: np.ndarray, cfg, title: str,
               path: Path, dpi: int) -> Path:
    """Axial CT slices through the tumour: mask contour and the patches crossing each slice, painted."""
    columns = manifest.frame.columns
    ct_path = manifest.image_path(case_id, "ct") if "ct" in columns else None
    mask_path = manifest.image_path(case_id, "mask") if "mask" in columns else None
    if ct_path is None or mask_path is None:
        raise FileNotFoundError(f"the manifest names no CT and mask for {case_id}")
    image = read_ct(ct_path, case_id)
    volume = sitk.GetArrayFromImage(image)  # z, y, x
    mask = sitk.GetArrayFromImage(read_ct(mask_path, case_id)) > 0
    if mask.shape != volume.shape:
        raise ValueError(f"mask {mask.shape} and CT {volume.shape} differ in size")
    to_index = _index_transform(image)
    centres = (patches.coords - np.array(image.GetOrigin())) @ to_index.T
    half = np.abs(to_index) @ patches.patch_size / 2
    _, ys, xs = np.nonzero(mask)
    margin = np.array(cfg.ct_margin_mm) / np.array(image.GetSpacing()[:2])
    x0, x1 = int(max(xs.min() - margin[0], 0)), int(min(xs.max() + margin[0] + 1, volume.shape[2]))
    y0, y1 = int(max(ys.min() - margin[1], 0)), int(min(ys.max() + margin[1] + 1, volume.shape[1]))
    slices = tumour_slices(mask, cfg.ct_slices)
    aspect = image.GetSpacing()[1] / image.GetSpacing()[0]

    fig, axes = plt.subplots(1, len(slices), figsize=(4.2 * len(slices) + 1, 4.4), squeeze=False)
    for ax, z in zip(axes[0], slices):
        crossing = np.abs(centres[:, 2] - z) <= half[2]
        # voxel i covers [i - 0.5, i + 0.5) in index units: shift to pixel edges
        lo = centres[crossing, :2] - half[:2] + 0.5 - [x0, y0]
        painted = paint((y1 - y0, x1 - x0), lo, lo + 2 * half[:2], scores[crossing])
        ax.imshow(volume[z, y0:y1, x0:x1], cmap="gray", vmin=cfg.ct_window[0], vmax=cfg.ct_window[1], aspect=aspect)
        shown = ax.imshow(painted, cmap=cfg.colormap, alpha=cfg.alpha, vmin=scores.min(), vmax=scores.max(),
                          aspect=aspect)
        ax.contour(mask[z, y0:y1, x0:x1], levels=[0.5], colors="cyan", linewidths=1)
        z_mm = image.TransformIndexToPhysicalPoint((0, 0, int(z)))[2]
        ax.set_title(f"slice {z} (z = {z_mm:.1f} mm), {int(crossing.sum())} patches", fontsize=9)
        ax.set_axis_off()
    fig.colorbar(shown, ax=list(axes[0]), fraction=0.03, label="node importance")
    fig.suptitle(f"{title} (tumour contour in cyan)")
    return save_figure(fig, path, dpi)


DRAW = {"pathology": slide_overlay, "radiology": ct_overlay}
