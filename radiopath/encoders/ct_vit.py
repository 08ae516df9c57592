"""CT encoders built on MONAI's 3-D ViT: SegVol's image encoder and M3D-CLIP's vision tower.

Both published networks are MONAI ``ViT(in_channels=1, img_size=(32, 256, 256),
patch_size=(4, 16, 16), hidden_size=768, mlp_dim=3072, num_layers=12,
num_heads=12)`` with the "perceptron" patch embedding (a linear layer on flattened
patches), spatial axes in (z, y, x) order. They differ in what they are for:

- ``segvol`` keeps the spatial token map: one 768-d vector per 4x16x16-voxel patch
  that touches the tumour, at the patch centre in mm. The volume is cut into
  native-resolution windows, like SegVol's zoom-in sliding windows.
- ``m3d_clip`` gives one 768-d vector per case (its CLIP image embedding of the
  whole prepared volume, resized to the input size), placed at the tumour centroid.

Intensities: :class:`~radiopath.preprocess.ct.PreparedCT` arrives normalised (HU
window or SegVol's foreground z-score, ``conf/ct``); both models were trained on
volumes min-max scaled to [0, 1], so each encoder min-max scales the prepared volume.

Shape overrides (``img_size``, ``patch_size``, ``hidden_size``, ``num_layers``,
``num_heads``, ``mlp_dim``) build small test networks; ``img_size`` must be a
multiple of ``patch_size``. Networks run on ``device`` (batched windows on a GPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

import numpy as np
import SimpleITK as sitk
import torch
from monai.networks.nets import ViT
from monai.transforms import Resize
from torch import nn

from radiopath.encoders.base import VolumeEncoder
from radiopath.encoders.checkpoints import initialise
from radiopath.encoders.registry import ENCODERS
from radiopath.errors import CaseError
from radiopath.preprocess.ct import PreparedCT

CONFIG_KEY = "encoder.radiology.checkpoint"
IMG_SIZE = (32, 256, 256)  # (z, y, x) voxels
PATCH_SIZE = (4, 16, 16)
# MONAI >= 1.4 gives every TransformerBlock a cross-attention LayerNorm that is unused
# without cross-attention; files saved with older MONAI (SegVol) or M3D's copy of the
# ViT do not have it, so it may stay at its initial value.
UNUSED_MONAI_KEYS = (r"(.*\.)?blocks\.\d+\.norm_cross_attn\.(weight|bias)",)


def build_vit(
    *,
    img_size: Sequence[int] = IMG_SIZE,
    patch_size: Sequence[int] = PATCH_SIZE,
    hidden_size: int = 768,
    num_layers: int = 12,
    num_heads: int = 12,
    mlp_dim: int = 3072,
    classification: bool = False,
) -> ViT:
    """MONAI's single-channel 3-D ViT with the perceptron patch embedding, no dropout.

    With ``classification`` it has a class token and returns it (after the final
    LayerNorm) in place of MONAI's classification head, as M3D-CLIP's ViT does.
    """
    img_size, patch_size = tuple(int(s) for s in img_size), tuple(int(p) for p in patch_size)
    if any(s % p for s, p in zip(img_size, patch_size)):
        raise ValueError(f"img_size {img_size} must be a multiple of patch_size {patch_size}")
    vit = ViT(
        in_channels=1,
        img_size=img_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        mlp_dim=mlp_dim,
        num_layers=num_layers,
        num_heads=num_heads,
        proj_type="perceptron",
        classification=classification,
        dropout_rate=0.0,
        spatial_dims=3,
    )
    if classification:
        vit.classification_head = nn.Identity()
    return vit.eval()


def minmax(volume: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] over the whole volume, as SegVol and M3D do before their ViTs."""
    volume = volume - volume.min()
    return (volume / max(float(volume.max()), 1e-8)).astype(np.float32)


def reorient(ct: PreparedCT, orientation: str) -> PreparedCT:
    """The same case with its voxel axes permuted/flipped to ``orientation`` (DICOM convention).

    Only the voxel order changes: physical positions, hence ``index_to_mm``, do not.
    """
    return PreparedCT(ct.case_id, sitk.DICOMOrient(ct.image, orientation), sitk.DICOMOrient(ct.mask, orientation))


def tumour_mask(ct: PreparedCT) -> np.ndarray:
    """The tumour as a boolean (z, y, x) array; :class:`CaseError` when it is empty."""
    mask = ct.mask_array() > 0
    if not mask.any():
        raise CaseError(ct.case_id, "tumour mask is empty: nothing to encode")
    return mask


def _extent_mm(ct: PreparedCT, voxels: Sequence[int]) -> tuple[float, float, float]:
    """Physical size (x, y, z) in mm of a box of ``voxels`` (z, y, x)."""
    spacing = ct.image.GetSpacing()
    return tuple(float(n * s) for n, s in zip(voxels[::-1], spacing))


class SegVolEncoder(VolumeEncoder):
    """SegVol's ViT as a patch encoder: one token per tumour-touching patch.

    How a case is encoded:

    1. Reorient to RAS voxel order (SegVol's loader reorients to RAS and makes the
       array (z, y, x)) and min-max scale the prepared volume to [0, 1].
    2. Lay a grid of edge-to-edge windows of ``img_size`` voxels (default 32x256x256)
       over the tumour's bounding box, as few as cover it, centred on it; voxels
       outside the volume are filled with 0, the scaled image's minimum. Every window
       holding tumour is encoded at native resolution (no resampling: at 1 mm a window
       spans 32 x 256 x 256 mm), ``batch_size`` windows per forward pass.
    3. The ViT's tokens form a (z, y, x) map of patches (8x16x16 per window). A token
       is kept when its patch holds at least ``min_tumour_voxels`` tumour voxels, so
       every tumour voxel lies in exactly one kept patch; its position is the patch
       centre, mapped to mm with :meth:`PreparedCT.index_to_mm`.

    Windows do not overlap, so a token near a window's edge sees context from its own
    window only. Give the CT preprocessing a crop that keeps enough tissue around the
    tumour (e.g. ``crop=fixed`` with ``crop_size`` >= 256 x 256 x 32), or most of each
    window is padding.
    """

    name = "segvol"

    def __init__(self, vit: ViT, img_size: Sequence[int], patch_size: Sequence[int], batch_size: int = 2,
                 min_tumour_voxels: int = 1):
        if min_tumour_voxels < 1:
            raise ValueError(f"min_tumour_voxels must be at least 1, got {min_tumour_voxels}")
        self.vit = vit.eval()
        self.img_size = np.array(img_size, dtype=int)
        self.patch_size = np.array(patch_size, dtype=int)
        self.embed_dim = int(vit.norm.normalized_shape[0])
        self.batch_size = int(batch_size)
        self.min_tumour_voxels = int(min_tumour_voxels)

    def encode(self, ct: PreparedCT, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
        """Tokens of tumour-touching patches ``(N, embed_dim)`` and their centres ``(N, 3)`` in mm."""
        ct = reorient(ct, "RAS")
        image, mask = minmax(ct.image_array()), tumour_mask(ct)
        starts = tumour_windows(mask, self.img_size)
        features, centres = [], []
        for first in range(0, len(starts), self.batch_size):
            batch = starts[first : first + self.batch_size]
            windows = np.stack([cut(image, start, self.img_size, fill=0.0) for start in batch])
            for start, tokens in zip(batch, self._token_maps(windows, device)):
                counts = patch_counts(cut(mask, start, self.img_size, fill=False), self.patch_size)
                keep = counts >= self.min_tumour_voxels
                features.append(tokens[keep])
                centres.append(start + np.argwhere(keep) * self.patch_size + (self.patch_size - 1) / 2)
        if not sum(len(c) for c in centres):
            raise CaseError(ct.case_id, f"no patch holds {self.min_tumour_voxels} tumour voxels (min_tumour_voxels)")
        return np.concatenate(features).astype(np.float32), ct.index_to_mm(np.concatenate(centres))

    @torch.inference_mode()
    def _token_maps(self, windows: np.ndarray, device: torch.device | str) -> np.ndarray:
        """ViT tokens of windows ``(B, z, y, x)`` as maps ``(B, gz, gy, gx, D)``."""
        self.vit.to(device)
        tokens, _ = self.vit(torch.from_numpy(windows).unsqueeze(1).to(device))
        grid = tuple(self.img_size // self.patch_size)
        # MONAI's patch tokens run over the input's spatial axes in order, here (z, y, x).
        return tokens.float().cpu().numpy().reshape(len(windows), *grid, -1)

    def patch_size_mm(self, ct: PreparedCT) -> tuple[float, float, float]:
        """Extent (x, y, z) in mm of one ViT patch."""
        return _extent_mm(ct, self.patch_size)


def tumour_windows(mask: np.ndarray, window: np.ndarray) -> np.ndarray:
    """First voxels (z, y, x) of the edge-to-edge windows covering the tumour that contain tumour.

    The grid holds as few windows per axis as cover the mask's bounding box, centred on it.
    """
    found = np.argwhere(mask)
    low, high = found.min(axis=0), found.max(axis=0) + 1
    counts = -(-(high - low) // window)  # ceil
    origin = low - (counts * window - (high - low)) // 2
    starts = [origin + np.array(index) * window for index in product(*(range(n) for n in counts))]
    return np.array([start for start in starts if cut(mask, start, window, fill=False).any()])


def cut(volume: np.ndarray, start: np.ndarray, size: np.ndarray, fill) -> np.ndarray:
    """The box of ``size`` voxels at ``start`` (may leave the volume), outside filled with ``fill``."""
    box = np.full(tuple(size), fill, dtype=volume.dtype)
    low = np.maximum(start, 0)
    high = np.minimum(start + size, volume.shape)
    if np.all(high > low):
        inside = tuple(slice(a, b) for a, b in zip(low, high))
        box[tuple(slice(a, b) for a, b in zip(low - start, high - start))] = volume[inside]
    return box


def patch_counts(mask: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """Tumour voxels per patch of a window mask: ``(gz, gy, gx)``."""
    gz, gy, gx = np.array(mask.shape) // patch
    return mask.reshape(gz, patch[0], gy, patch[1], gx, patch[2]).sum(axis=(1, 3, 5))


@ENCODERS.register("segvol")
def segvol(
    checkpoint: str | None = None,
    *,
    img_size: Sequence[int] = IMG_SIZE,
    patch_size: Sequence[int] = PATCH_SIZE,
    hidden_size: int = 768,
    num_layers: int = 12,
    num_heads: int = 12,
    mlp_dim: int = 3072,
    batch_size: int = 2,
    min_tumour_voxels: int = 1,
) -> SegVolEncoder:
    """SegVol's image encoder (Du et al., NeurIPS 2024) as a tumour patch encoder (see :class:`SegVolEncoder`).

    SegVol's ``build_sam.py`` builds ``ViT(in_channels=1, img_size=(32, 256, 256),
    patch_size=(4, 16, 16), hidden_size=768, mlp_dim=3072, num_layers=12,
    num_heads=12, pos_embed='perceptron', classification=False)`` (MONAI 0.9). Accepted
    files and where the encoder sits in them: ``SegVol_v1.pth`` (``['model']``, keys
    ``module.image_encoder.*``, a DataParallel-wrapped SegVol), the Hugging Face
    ``BAAI/SegVol`` ``pytorch_model.bin`` (``model.image_encoder.*``) and the
    self-supervised ``ViT_pretrain.ckpt`` (``['state_dict']``, ``model.encoder.*``).
    """
    vit = build_vit(img_size=img_size, patch_size=patch_size, hidden_size=hidden_size, num_layers=num_layers,
                    num_heads=num_heads, mlp_dim=mlp_dim)
    initialise(
        vit, checkpoint, encoder="segvol", config_key=CONFIG_KEY,
        weight_file="SegVol_v1.pth (or BAAI/SegVol pytorch_model.bin)",
        prefixes=("module.image_encoder.", "model.image_encoder.", "image_encoder.", "model.encoder."),
        ignore_missing=UNUSED_MONAI_KEYS,
    )
    return SegVolEncoder(vit, img_size, patch_size, batch_size=batch_size, min_tumour_voxels=min_tumour_voxels)


class M3DClipVision(nn.Module):
    """M3D-CLIP's image tower, its modules named as in the published checkpoint.

    ``vision_encoder`` is the ViT with a class token; ``mm_vision_proj`` maps its
    class token into the image-text space. The output is M3D-CLIP's
    ``encode_image(...)[:, 0]``: the projected class token, L2-normalised.
    """

    def __init__(self, vit: ViT, hidden_size: int):
        super().__init__()
        self.vision_encoder = vit
        self.mm_vision_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        """Volumes ``(B, 1, z, y, x)`` in [0, 1] -> unit vectors ``(B, hidden_size)``."""
        cls_token, _ = self.vision_encoder(volumes)
        return nn.functional.normalize(self.mm_vision_proj(cls_token), dim=-1)


class M3DClipEncoder(VolumeEncoder):
    """M3D-CLIP's image embedding of the prepared volume: one vector per case.

    The volume is reoriented to LPS voxel order (rows anterior to posterior, columns
    patient right to left: the radiological display of the Radiopaedia slices M3D was
    trained on; the slice direction of that data is not documented), min-max scaled to
    [0, 1] and resized to ``img_size`` (trilinear, anti-aliased when shrinking), as
    M3D's data preparation resizes whole scans to 32 x 256 x 256. The vector is placed
    at the tumour centroid; its patch extent is the whole prepared volume.
    """

    name = "m3d_clip"

    def __init__(self, model: M3DClipVision, img_size: Sequence[int]):
        self.model = model.eval()
        self.img_size = tuple(int(s) for s in img_size)
        self.embed_dim = int(model.mm_vision_proj.out_features)

    @torch.inference_mode()
    def encode(self, ct: PreparedCT, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
        """The case's embedding ``(1, embed_dim)`` and the tumour centroid ``(1, 3)`` in mm."""
        ct = reorient(ct, "LPS")
        volume = Resize(self.img_size, mode="trilinear", anti_aliasing=True)(minmax(ct.image_array())[None])
        self.model.to(device)
        vector = self.model(torch.as_tensor(volume, dtype=torch.float32)[None].to(device))
        centroid = np.argwhere(tumour_mask(ct)).mean(axis=0)
        return vector.float().cpu().numpy(), ct.index_to_mm(centroid)

    def patch_size_mm(self, ct: PreparedCT) -> tuple[float, float, float]:
        """Extent (x, y, z) in mm of the prepared volume, which the one vector describes."""
        return _extent_mm(ct, ct.image_array().shape)


def _vision_tower(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """M3D-CLIP's image tower keys; the BERT text tower and its projection are dropped."""
    return {k: v for k, v in state.items() if k.startswith(("vision_encoder.", "mm_vision_proj."))}


@ENCODERS.register("m3d_clip")
def m3d_clip(
    checkpoint: str | None = None,
    *,
    img_size: Sequence[int] = IMG_SIZE,
    patch_size: Sequence[int] = PATCH_SIZE,
    hidden_size: int = 768,
    num_layers: int = 12,
    num_heads: int = 12,
    mlp_dim: int = 3072,
) -> M3DClipEncoder:
    """M3D-CLIP's vision encoder (Bai et al., 2024) as a whole-case encoder (see :class:`M3DClipEncoder`).

    M3D's ``CLIP.py`` builds a MONAI-style ``ViT(in_channels=1, img_size=(32, 256, 256),
    patch_size=(4, 16, 16), hidden_size=768, mlp_dim=3072, num_layers=12,
    num_heads=12, pos_embed='perceptron', classification=True)`` whose classification
    head is removed (it returns all tokens; the class token is used), plus
    ``mm_vision_proj = Linear(768, 768)``. The published ``GoodBaiBai88/M3D-CLIP``
    weights (``model.safetensors`` / ``pytorch_model.bin``) hold them under
    ``vision_encoder.*`` and ``mm_vision_proj.*``; the text tower is dropped.
    """
    vit = build_vit(img_size=img_size, patch_size=patch_size, hidden_size=hidden_size, num_layers=num_layers,
                    num_heads=num_heads, mlp_dim=mlp_dim, classification=True)
    model = M3DClipVision(vit, hidden_size)
    initialise(
        model, checkpoint, encoder="m3d_clip", config_key=CONFIG_KEY,
        weight_file="M3D-CLIP model.safetensors", prefixes=("module.",), adapt=_vision_tower,
        ignore_missing=UNUSED_MONAI_KEYS,
    )
    return M3DClipEncoder(model, img_size)
