"""Pathology tile encoders built with timm, each with its published architecture.

============ ====================================== ===== ===== =====================
name         architecture                           input dim   normalisation
============ ====================================== ===== ===== =====================
uni          ViT-L/16, LayerScale 1e-5              224   1024  ImageNet
conch        ViT-B/16 (CONCH vision trunk)          448   768   OpenAI CLIP
ctranspath   Swin-T with a convolutional stem       224   768   ImageNet
chief        = ctranspath (CHIEF's patch encoder)   224   768   ImageNet
hipt         ViT-S/16 (HIPT's DINO ViT-256)         256   384   mean 0.5, std 0.5
timm:<name>  any timm model                         from timm's pretrained config
============ ====================================== ===== ===== =====================

Every builder takes ``checkpoint`` (a local file, or None for random weights with a
loud warning), ``input_size`` (pixels fed to the network; the published size by
default) and timm keyword overrides (``depth=1, embed_dim=32`` ... for tiny test
models). What each loader expects of the published file (checked against the
authors' code, see each builder's docstring) is mapped here and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import timm
import torch
from torch import nn

from radiopath.encoders.base import TileEncoder
from radiopath.encoders.checkpoints import initialise
from radiopath.encoders.registry import ENCODERS

CONFIG_KEY = "encoder.pathology.checkpoint"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class TimmTileEncoder(TileEncoder):
    """A timm backbone built with ``num_classes=0`` (so it returns pooled features) as a tile encoder.

    ``embed_dim`` is the width the backbone returns: timm's ``head_hidden_size``
    where the model has one (it equals ``num_features`` for ViTs and Swins, and
    differs for models with a pre-logits layer such as MobileNetV3).
    """

    def __init__(self, name: str, model: nn.Module, input_size: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.name = name
        self.model = model.eval()
        self.embed_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self.input_size = int(input_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(N, embed_dim)`` of normalised images ``(N, 3, input_size, input_size)``."""
        return self.model(images)


def _create(arch: str, defaults: dict, overrides: dict) -> nn.Module:
    """``timm.create_model`` without pretrained download or classifier; overrides win."""
    return timm.create_model(arch, pretrained=False, num_classes=0, **{**defaults, **overrides})


@ENCODERS.register("uni")
def uni(checkpoint: str | None = None, input_size: int | None = None, **timm_kwargs) -> TimmTileEncoder:
    """UNI (Chen et al., Nat. Med. 2024): ViT-L/16 with LayerScale, 1024-d class token.

    Published file: ``MahmoodLab/UNI`` ``pytorch_model.bin``, a plain timm state dict
    for ``vit_large_patch16_224(img_size=224, init_values=1e-5, dynamic_img_size=True)``
    (the model card loads it with ``strict=True``); ImageNet mean/std at 224 px.
    """
    defaults = dict(img_size=224, patch_size=16, init_values=1e-5, dynamic_img_size=True)
    model = _create("vit_large_patch16_224", defaults, timm_kwargs)
    initialise(model, checkpoint, encoder="uni", config_key=CONFIG_KEY, weight_file="UNI pytorch_model.bin")
    return TimmTileEncoder("uni", model, input_size or _img_size(defaults, timm_kwargs), *IMAGENET)


@ENCODERS.register("conch")
def conch(checkpoint: str | None = None, input_size: int | None = None, **timm_kwargs) -> TimmTileEncoder:
    """CONCH's vision trunk (Lu et al., Nat. Med. 2024): ViT-B/16 at 448 px, 768-d class token.

    CONCH (a CoCa model) builds its trunk as timm ``VisionTransformer(embed_dim=768,
    depth=12, num_heads=12, mlp_ratio=4, img_size=448, patch_size=16, num_classes=0,
    dynamic_img_size=True)`` and normalises with the OpenAI CLIP mean/std. Its
    ``pytorch_model.bin`` (``MahmoodLab/CONCH``; possibly under ``state_dict`` and
    ``module.``) stores the trunk under ``visual.trunk.``; the text tower, the
    attentional poolers and the contrastive projection are dropped. The feature is the
    trunk's class token after its final LayerNorm, not CONCH's 512-d
    ``encode_image`` embedding (attentional pooling + projection); pass
    ``global_pool="avg"`` for the mean patch token instead.
    """
    defaults = dict(img_size=448, patch_size=16, dynamic_img_size=True)
    model = _create("vit_base_patch16_224", defaults, timm_kwargs)
    initialise(
        model, checkpoint, encoder="conch", config_key=CONFIG_KEY, weight_file="CONCH pytorch_model.bin",
        prefixes=("module.visual.trunk.", "visual.trunk."),
    )
    return TimmTileEncoder("conch", model, input_size or _img_size(defaults, timm_kwargs), *OPENAI_CLIP)


@ENCODERS.register("hipt")
def hipt(checkpoint: str | None = None, input_size: int | None = None, **timm_kwargs) -> TimmTileEncoder:
    """HIPT's patch-level ViT-256 (Chen et al., CVPR 2022): DINO ViT-S/16 on 256-px tiles, 384-d.

    HIPT's ``vit_small`` is DINO's (patch 16, 384-d, depth 12, 6 heads, qkv bias,
    LayerNorm eps 1e-6), which maps key for key onto timm's ``vit_small_patch16_224``.
    Its position embedding is for a 224-px grid (197 tokens) and is interpolated to
    the 16x16 grid of a 256-px tile at run time: here timm's ``dynamic_img_size``
    does that (bicubic, as DINO does, up to DINO's +0.1 scale-factor offset).
    ``vit256_small_dino.pth`` is a DINO checkpoint: HIPT's ``get_vit256`` takes its
    ``teacher``, strips ``module.`` and ``backbone.``; the DINO projection head
    (``head.*``) is dropped. Normalisation follows HIPT's ``eval_transforms``: mean
    and std 0.5.
    """
    defaults = dict(img_size=224, patch_size=16, dynamic_img_size=True)
    model = _create("vit_small_patch16_224", defaults, timm_kwargs)
    initialise(
        model, checkpoint, encoder="hipt", config_key=CONFIG_KEY, weight_file="HIPT vit256_small_dino.pth",
        prefixes=("module.backbone.", "backbone."),
    )
    return TimmTileEncoder("hipt", model, input_size or 256, *HALF)


def _img_size(defaults: dict, overrides: dict) -> int:
    """The square input size the model was built for."""
    size = overrides.get("img_size", defaults["img_size"])
    return int(size if isinstance(size, int) else size[0])  # (h, w) sequences, hydra lists included


class ConvStem(nn.Module):
    """CTransPath's patch embedding, in place of Swin's 4x4 patchify convolution.

    Two blocks of 3x3 stride-2 convolution (no bias), BatchNorm and ReLU (widths
    ``embed_dim/8`` then ``embed_dim/4``), a 1x1 convolution to ``embed_dim``, then
    Swin's patch norm (LayerNorm). Takes timm's ``embed_layer`` arguments and returns
    NHWC tokens, the format current timm Swins expect from their patch embedding.
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: type[nn.Module] | None = None,
        strict_img_size: bool = True,
        output_fmt: str = "NHWC",
        device=None,
        dtype=None,
    ):
        super().__init__()
        if patch_size not in (4, (4, 4)):
            raise ValueError(f"the convolutional stem downsamples by exactly 4, got patch_size={patch_size}")
        if output_fmt != "NHWC":
            raise ValueError(f"the convolutional stem returns NHWC tokens, got output_fmt={output_fmt!r}")
        dd = dict(device=device, dtype=dtype)
        layers, width = [], embed_dim // 8
        for _ in range(2):
            layers += [
                nn.Conv2d(in_chans, width, 3, stride=2, padding=1, bias=False, **dd),
                nn.BatchNorm2d(width, **dd),
                nn.ReLU(inplace=True),
            ]
            in_chans, width = width, width * 2
        layers.append(nn.Conv2d(in_chans, embed_dim, kernel_size=1, **dd))
        self.proj = nn.Sequential(*layers)
        self.norm = norm_layer(embed_dim, **dd) if norm_layer else nn.Identity()
        size = tuple(img_size) if isinstance(img_size, (tuple, list)) else (img_size, img_size)
        self.img_size = size
        self.patch_size = (4, 4)
        self.grid_size = (size[0] // 4, size[1] // 4)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.strict_img_size = strict_img_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` -> tokens ``(N, H/4, W/4, embed_dim)``."""
        if self.strict_img_size and tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"input is {tuple(x.shape[-2:])} px, the stem was built for {self.img_size}")
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


def adapt_old_swin_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a Swin state dict of timm 0.5 (CTransPath's) onto the current timm layout.

    - timm 0.5 put each stage's patch merging at the *end* of the stage
      (``layers.i.downsample.*``, i = 0..2); current timm puts it at the *start* of the
      next stage (``layers.{i+1}.downsample.*``). Same weights, same channel order.
    - ``relative_position_index`` and ``attn_mask`` were saved buffers; current timm
      rebuilds them (non-persistent), so they are dropped.
    - a classification ``head.*`` is dropped: the encoder returns pooled features.
    A state dict already in the current layout passes through unchanged.
    """
    old_layout = any(key.startswith("layers.0.downsample.") for key in state)
    adapted = {}
    for key, value in state.items():
        if key.endswith(("relative_position_index", "attn_mask")) or key.startswith("head."):
            continue
        if old_layout:
            key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", key)
        adapted[key] = value
    return adapted


def _swin_conv_stem(name: str, checkpoint: str | None, input_size: int | None, timm_kwargs: dict) -> TimmTileEncoder:
    """CTransPath's network, loaded from ``ctranspath.pth`` / ``CHIEF_CTransPath.pth``."""
    defaults = dict(img_size=224, embed_layer=ConvStem)
    model = _create("swin_tiny_patch4_window7_224", defaults, timm_kwargs)
    initialise(
        model, checkpoint, encoder=name, config_key=CONFIG_KEY,
        weight_file="CHIEF_CTransPath.pth" if name == "chief" else "ctranspath.pth",
        prefixes=("module.",), adapt=adapt_old_swin_keys,
    )
    return TimmTileEncoder(name, model, input_size or _img_size(defaults, timm_kwargs), *IMAGENET)


@ENCODERS.register("ctranspath")
def ctranspath(checkpoint: str | None = None, input_size: int | None = None, **timm_kwargs) -> TimmTileEncoder:
    """CTransPath (Wang et al., Med. Image Anal. 2022): Swin-T with a conv stem, 768-d.

    The authors build ``swin_tiny_patch4_window7_224(embed_layer=ConvStem)`` in their
    modified timm 0.5.4, set ``head = Identity`` and load ``ctranspath.pth['model']``;
    tiles are resized to 224 px and ImageNet-normalised. The file's old timm key
    layout is mapped by :func:`adapt_old_swin_keys`.
    """
    return _swin_conv_stem("ctranspath", checkpoint, input_size, timm_kwargs)


@ENCODERS.register("chief")
def chief(checkpoint: str | None = None, input_size: int | None = None, **timm_kwargs) -> TimmTileEncoder:
    """CHIEF's patch encoder (Wang et al., Nature 2024), which is CTransPath.

    CHIEF's ``Get_CHIEF_patch_feature.py`` builds the same network and loads
    ``CHIEF_CTransPath.pth['model']`` with ``strict=True``: same layout as CTransPath.
    """
    return _swin_conv_stem("chief", checkpoint, input_size, timm_kwargs)


@ENCODERS.register("timm", member="model_name")
def timm_model(
    model_name: str, checkpoint: str | None = None, input_size: int | None = None, **timm_kwargs
) -> TimmTileEncoder:
    """Any timm model (``ENCODERS.create("timm:resnet18")``): size and mean/std from its pretrained config.

    ``checkpoint`` is a state dict in timm's layout for that model (e.g. the
    ``pytorch_model.bin`` or ``model.safetensors`` of its timm release); its
    classifier weights are dropped.
    """
    model = timm.create_model(model_name, pretrained=False, num_classes=0, **timm_kwargs)
    name = f"timm:{model_name}"
    initialise(
        model, checkpoint, encoder=name, config_key=CONFIG_KEY,
        weight_file=f"the timm weights of {model_name}", adapt=_classifier_dropper(model),
    )
    data = timm.data.resolve_data_config({}, model=model)
    return TimmTileEncoder(name, model, input_size or data["input_size"][-1], data["mean"], data["std"])


def _classifier_dropper(model: nn.Module):
    """A key filter that removes the classifier named in the model's pretrained config."""
    classifier = model.pretrained_cfg.get("classifier") or ()
    prefixes = tuple(f"{name}." for name in ((classifier,) if isinstance(classifier, str) else classifier))

    def drop(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in state.items() if not (prefixes and k.startswith(prefixes))}

    return drop
