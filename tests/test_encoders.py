"""Patch encoders: build by name, map inputs to vectors, load the published checkpoint layouts.

All networks are tiny (one block, a few dozen channels); full-size ones are built on
the meta device only, to check their published sizes without computing anything.
"""

import argparse
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from radiopath.encoders import ENCODERS
from radiopath.encoders.checkpoints import CheckpointError, RandomWeightsWarning
from radiopath.errors import CaseError
from radiopath.preprocess.ct import PreparedCT
from radiopath.registry import UnknownNameError
from radiopath.config import CONF_DIR

ENCODER_CONF = CONF_DIR / "encoder"
TINY_VIT = dict(img_size=32, depth=1, embed_dim=32, num_heads=2)
TINY_SWIN = dict(embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
TINY_CT = dict(img_size=(8, 32, 32), patch_size=(4, 8, 8), hidden_size=32, mlp_dim=64, num_layers=1, num_heads=2)
PATHOLOGY = {"uni": TINY_VIT, "conch": TINY_VIT, "hipt": TINY_VIT, "ctranspath": TINY_SWIN, "chief": TINY_SWIN}
RADIOLOGY = {"segvol": TINY_CT, "m3d_clip": TINY_CT}
# MONAI >= 1.4 has these unused LayerNorms; the published (older MONAI) files do not.
NEW_MONAI_ONLY = re.compile(r"(.*\.)?blocks\.\d+\.norm_cross_attn\..*")

pytestmark = pytest.mark.filterwarnings("ignore::radiopath.encoders.checkpoints.RandomWeightsWarning")


def tiles(n: int = 3, size: int = 64) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def seeded(name: str, seed: int, **kwargs):
    torch.manual_seed(seed)
    return ENCODERS.create(name, **kwargs)


def prepared_ct(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> PreparedCT:
    """A 1 mm CT of noise with a spherical tumour (radius 6 mm) off the volume's centre."""
    z, y, x = np.mgrid[:30, :36, :40]
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=z.shape).astype(np.float32))
    image.SetOrigin((10.0, -20.0, 5.0))
    image.SetDirection(direction)
    mask = sitk.GetImageFromArray(((z - 15) ** 2 + (y - 18) ** 2 + (x - 24) ** 2 <= 36).astype(np.uint8))
    mask.CopyInformation(image)
    return PreparedCT("case", image, mask)


def tumour_points_mm(ct: PreparedCT) -> np.ndarray:
    return ct.index_to_mm(np.argwhere(ct.mask_array() > 0))


def image_corners_mm(ct: PreparedCT) -> np.ndarray:
    shape = np.array(ct.image_array().shape) - 1
    return ct.index_to_mm(np.array(np.meshgrid(*[[0, s] for s in shape])).reshape(3, -1).T)


# --- building and encoding -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PATHOLOGY))
def test_pathology_encoders_map_uint8_tiles_to_float32_vectors(name):
    encoder = seeded(name, 0, **PATHOLOGY[name])  # seeded: the result must not depend on the draw
    out = encoder.encode_tiles(tiles())
    assert out.shape == (3, encoder.embed_dim) and out.dtype == np.float32
    assert np.isfinite(out).all() and not np.allclose(out[0], out[1])


def test_all_encoders_are_registered():
    assert {*PATHOLOGY, *RADIOLOGY, "pathomics", "radiomics_scalar", "radiomics_maps", "timm:<model_name>"} \
        <= set(ENCODERS.names())
    assert "timm:resnet18" in ENCODERS and "timm" not in ENCODERS and "timm:" not in ENCODERS


@pytest.mark.parametrize("name", ["unii", "timm", "timm:"])
def test_unknown_encoder_lists_the_known_ones(name):
    with pytest.raises(UnknownNameError, match=r"unknown encoder .*; known: .*timm:<model_name>, uni$"):
        ENCODERS.create(name)


@pytest.mark.parametrize(
    ("name", "embed_dim", "input_size", "pos_tokens"),
    [("uni", 1024, 224, 197), ("conch", 768, 448, 785), ("hipt", 384, 256, 197), ("ctranspath", 768, 224, None),
     ("chief", 768, 224, None)],
)
def test_published_pathology_architectures(name, embed_dim, input_size, pos_tokens):
    with torch.device("meta"):
        encoder = ENCODERS.create(name)
    assert (encoder.embed_dim, encoder.input_size) == (embed_dim, input_size)
    if pos_tokens:  # the published files' position grids: 14x14 (+cls), 28x28 (+cls)
        assert encoder.model.pos_embed.shape == (1, pos_tokens, embed_dim)


@pytest.mark.parametrize("name", sorted(RADIOLOGY))
def test_published_ct_architectures(name):
    with torch.device("meta"):
        encoder = ENCODERS.create(name)
    assert encoder.embed_dim == 768
    vit = encoder.vit if name == "segvol" else encoder.model.vision_encoder
    assert vit.patch_embedding.position_embeddings.shape == (1, 8 * 16 * 16, 768)
    assert vit.patch_embedding.patch_embeddings[1].weight.shape == (768, 4 * 16 * 16)
    assert len(vit.blocks) == 12


def test_any_timm_model_by_name():
    encoder = ENCODERS.create("timm:resnet18")
    assert (encoder.name, encoder.embed_dim, encoder.input_size) == ("timm:resnet18", 512, 224)
    assert encoder.mean == pytest.approx((0.485, 0.456, 0.406))
    assert encoder.encode_tiles(tiles(2)).shape == (2, 512)


# --- checkpoints ------------------------------------------------------------------------


def test_no_checkpoint_warns_loudly(caplog):
    with pytest.warns(RandomWeightsWarning, match=r"NO pretrained weights.*encoder\.pathology\.checkpoint"):
        ENCODERS.create("uni", **TINY_VIT)
    with pytest.warns(RandomWeightsWarning, match=r"encoder\.radiology\.checkpoint"):
        ENCODERS.create("segvol", **TINY_CT)
    assert "RANDOM" in caplog.text


def to_old_swin(state: dict) -> dict:
    """timm 0.5 Swin layout: patch merging at the end of the previous stage, saved buffers, a head."""
    old = {re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.", k): v
           for k, v in state.items()}
    blocks = {k.rsplit(".attn.", 1)[0] for k in state if ".attn.qkv.weight" in k}
    old |= {f"{block}.attn.relative_position_index": torch.zeros(49, 49, dtype=torch.long) for block in blocks}
    old |= {f"{block}.attn_mask": torch.zeros(4, 49, 49) for block in blocks}
    return old | {"head.weight": torch.zeros(2, 768), "head.bias": torch.zeros(2)}


def published_pathology_file(name: str, state: dict, path: Path) -> None:
    """Save ``state`` the way the published file of ``name`` lays it out."""
    if name == "uni":
        content = state
    elif name == "conch":  # the whole CoCa model; the trunk under visual.trunk.
        content = {f"visual.trunk.{k}": v for k, v in state.items()}
        content |= {"visual.attn_pool_contrast.query": torch.zeros(1, 768), "text.positional_embedding": torch.zeros(2),
                    "logit_scale": torch.zeros(())}
    elif name == "hipt":  # a DINO checkpoint: teacher and student, projection head, pickled args
        teacher = {f"backbone.{k}": v for k, v in state.items()} | {"head.last_layer.weight_g": torch.zeros(1)}
        student = {k: torch.zeros_like(v) for k, v in teacher.items()}
        content = {"student": student, "teacher": teacher, "epoch": 100, "args": argparse.Namespace(arch="vit_small")}
    else:  # ctranspath / chief: {"model": old timm layout}
        content = {"model": to_old_swin(state)}
    torch.save(content, path)


@pytest.mark.parametrize("name", sorted(PATHOLOGY))
def test_published_pathology_layout_loads_back(tmp_path, name):
    source = seeded(name, 1, **PATHOLOGY[name])
    path = tmp_path / f"{name}.pth"
    published_pathology_file(name, source.model.state_dict(), path)
    loaded = seeded(name, 2, checkpoint=str(path), **PATHOLOGY[name])
    batch = tiles(2)
    np.testing.assert_array_equal(loaded.encode_tiles(batch), source.encode_tiles(batch))


def published_ct_file(name: str, state: dict, path: Path) -> None:
    """SegVol_v1.pth ({"model": module.image_encoder.*}) or M3D-CLIP's safetensors (with its text tower)."""
    state = {k: v for k, v in state.items() if not NEW_MONAI_ONLY.fullmatch(k)}
    if name == "segvol":
        model = {f"module.image_encoder.{k}": v for k, v in state.items()}
        model["module.mask_decoder.iou_token.weight"] = torch.zeros(1, 768)
        torch.save({"model": model, "epoch": 3}, path)
    else:
        text = {"language_encoder.embeddings.word_embeddings.weight": torch.zeros(4, 8),
                "mm_language_proj.weight": torch.zeros(8, 8), "logit_scale": torch.zeros(())}
        save_file({k: v.contiguous() for k, v in (state | text).items()}, str(path))


@pytest.mark.parametrize("name", sorted(RADIOLOGY))
def test_published_ct_layout_loads_back(tmp_path, name):
    source = seeded(name, 1, **TINY_CT)
    network = source.vit if name == "segvol" else source.model
    path = tmp_path / (f"{name}.pth" if name == "segvol" else "model.safetensors")
    published_ct_file(name, network.state_dict(), path)
    loaded = seeded(name, 2, checkpoint=str(path), **TINY_CT)
    ct = prepared_ct()
    np.testing.assert_array_equal(loaded.encode(ct)[0], source.encode(ct)[0])


def test_checkpoint_with_missing_keys_is_a_clear_error(tmp_path):
    state = seeded("uni", 1, **TINY_VIT).model.state_dict()
    del state["blocks.0.attn.qkv.weight"], state["norm.bias"]
    torch.save(state, tmp_path / "partial.bin")
    with pytest.raises(CheckpointError, match=r"2 keys missing.*blocks\.0\.attn\.qkv\.weight"):
        ENCODERS.create("uni", checkpoint=str(tmp_path / "partial.bin"), **TINY_VIT)


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    torch.save(seeded("uni", 1, **TINY_VIT).model.state_dict(), tmp_path / "uni.bin")
    with pytest.raises(CheckpointError, match=r"shape mismatches: .*pos_embed"):
        ENCODERS.create("uni", checkpoint=str(tmp_path / "uni.bin"), **{**TINY_VIT, "embed_dim": 64})
    with pytest.raises(CheckpointError, match="not found"):
        ENCODERS.create("uni", checkpoint=str(tmp_path / "absent.bin"), **TINY_VIT)


class Pickled:
    """Not a tensor: weights-only loading must refuse it."""


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    torch.save({"model": {}, "extra": Pickled()}, tmp_path / "unsafe.pth")
    with pytest.raises(CheckpointError, match=r"pickled Python objects.*Pickled"):
        ENCODERS.create("uni", checkpoint=str(tmp_path / "unsafe.pth"), **TINY_VIT)


# --- CT encoders on a prepared case ----------------------------------------------------------


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1)])
def test_segvol_tokens_cover_the_tumour_and_nothing_far_from_it(direction):
    ct = prepared_ct(direction)
    encoder = ENCODERS.create("segvol", **TINY_CT)  # windows of 8 voxels in z: the tumour needs two
    features, coords = encoder.encode(ct)
    assert features.shape == (len(coords), 32) and features.dtype == np.float32 and len(coords) > 1
    half_patch = np.array(encoder.patch_size_mm(ct)) / 2
    tumour = tumour_points_mm(ct)
    # every token's patch touches the tumour, and every tumour voxel lies in a token's patch
    assert all((np.abs(tumour - c) <= half_patch).all(axis=1).any() for c in coords)
    assert all((np.abs(coords - t) <= half_patch).all(axis=1).any() for t in tumour)
    corners = image_corners_mm(ct)
    assert (coords >= corners.min(axis=0)).all() and (coords <= corners.max(axis=0)).all()
    np.testing.assert_allclose(coords.mean(axis=0), tumour.mean(axis=0), atol=half_patch.max())


def test_segvol_batches_windows_without_changing_tokens():
    ct = prepared_ct()
    one = seeded("segvol", 1, batch_size=1, **TINY_CT).encode(ct)
    many = seeded("segvol", 1, batch_size=4, **TINY_CT).encode(ct)
    np.testing.assert_allclose(one[0], many[0], atol=1e-5)
    np.testing.assert_array_equal(one[1], many[1])


def test_segvol_case_without_enough_tumour_fails_clearly():
    ct = prepared_ct()
    with pytest.raises(CaseError, match="min_tumour_voxels"):
        ENCODERS.create("segvol", min_tumour_voxels=4 * 8 * 8 + 1, **TINY_CT).encode(ct)
    empty = sitk.Image(ct.mask.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(ct.mask)
    with pytest.raises(CaseError, match="empty"):
        ENCODERS.create("segvol", **TINY_CT).encode(PreparedCT("case", ct.image, empty))


def test_m3d_clip_gives_one_vector_at_the_tumour_centroid():
    ct = prepared_ct((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    features, coords = ENCODERS.create("m3d_clip", **TINY_CT).encode(ct)
    assert features.shape == (1, 32) and coords.shape == (1, 3)
    assert np.linalg.norm(features) == pytest.approx(1.0, abs=1e-5)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(ct.mask)
    np.testing.assert_allclose(coords[0], stats.GetCentroid(1), atol=1e-3)


# --- configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(ENCODER_CONF.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_encoder_configs_name_a_registered_encoder(path):
    cfg = OmegaConf.load(path)
    assert {"name", "checkpoint", "batch_size", "kwargs"} <= set(cfg)
    assert cfg.name in ENCODERS
    assert cfg.checkpoint is None and cfg.batch_size >= 1
