"""ViT → multi-scale pyramid → FPN decoder, in two variants: ours (the default) and the official one.

A plain ViT has one 1/16-scale feature map. Taking tokens after blocks 4/6/8/12 and rescaling them ×4/×2/×1/×0.5
gives the 1/4…1/32 pyramid an FPN expects. The two decoders differ in how:

* `decoder="ours"`: transposed convolutions up, max-pooling down, then a 1×1 projection, MONAI's
  `FeaturePyramidNetwork` (nearest upsampling, no normalisation) and conv+BN+ReLU scale heads: 7.21 M parameters
  with TinyUSFM. Our design; the widths scale with the backbone, so it also serves the 768-wide teacher.
* `decoder="official"`: the decoder of the official TinyUSFM segmentation model (`SegmentationModel` in the
  MacDunno/TinyUSFM repository): a 1×1 convolution 192→48 per level followed by bilinear rescaling, an FPN of
  128 channels whose lateral and output convolutions are conv+BN+ReLU with bilinear top-down upsampling, the four
  levels summed after bilinear upsampling, Dropout2d 0.1 and a 1×1 classifier with ONE output channel for a binary
  task (sigmoid) and `num_classes` otherwise: 6.18 M parameters with TinyUSFM. Module names follow the official
  model, so its fine-tuned state dicts load strictly (`networks.checkpoint.load_pretrained`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork
from torch import nn

from .models import build_backbone
from .vit import VisionTransformer

DEFAULT_OUT_INDICES = (3, 5, 7, 11)  # blocks 4, 6, 8, 12
DECODERS = ("ours", "official")
OFFICIAL_RESCALES = (4.0, 2.0, 1.0, 0.5)


def official_out_channels(num_classes: int) -> int:
    """Output channels of the official decoder: 1 (sigmoid, BCE) for a binary task, else one per class."""
    return 1 if num_classes == 2 else num_classes


class OfficialNeck(nn.Module):
    """1×1 projection of each level to `embed_dim * scale_factor` channels, then bilinear rescaling ×4/×2/×1/×0.5
    (the official `Feature2Pyramid_Scale`; names match its state dict: `projections.{i}`).

    Args:
        embed_dim: backbone width.
        rescales: scale factor of each level.
        scale_factor: projected width as a fraction of `embed_dim` (0.25: 192 → 48).
    """

    def __init__(
        self, embed_dim: int = 192, rescales: Sequence[float] = OFFICIAL_RESCALES, scale_factor: float = 0.25
    ) -> None:
        super().__init__()
        self.rescales = [float(r) for r in rescales]
        out = int(embed_dim * scale_factor)
        self.projections = nn.ModuleList([nn.Conv2d(embed_dim, out, kernel_size=1) for _ in self.rescales])

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        outs: list[torch.Tensor] = []
        for i, proj in enumerate(self.projections):
            y = proj(feats[i])
            rescale = self.rescales[i]
            if rescale != 1.0:
                y = F.interpolate(y, scale_factor=rescale, mode="bilinear", align_corners=False)
            outs.append(y)
        return outs


def _conv_bn_relu(cin: int, cout: int, kernel_size: int) -> nn.Sequential:
    """Conv (with bias, as the official head) + BN + ReLU; names `0`, `1`, `2` as in the official state dict."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class OfficialFPNHead(nn.Module):
    """The official FPN decode head: lateral conv+BN+ReLU, bilinear top-down sum, 3×3 conv+BN+ReLU per level,
    bilinear upsampling of every level to the finest and sum, Dropout2d, 1×1 classifier (`conv_seg`).

    Args:
        in_channels: width of each input level.
        channels: FPN width.
        out_channels: classifier outputs (see `official_out_channels`).
        dropout: Dropout2d probability before the classifier (0 = none).
    """

    def __init__(
        self, in_channels: Sequence[int] = (48, 48, 48, 48), channels: int = 128, out_channels: int = 1,
        dropout: float = 0.1,
    ) -> None:  # fmt: skip
        super().__init__()
        self.lateral_convs = nn.ModuleList([_conv_bn_relu(c, channels, 1) for c in in_channels])
        self.fpn_convs = nn.ModuleList([_conv_bn_relu(channels, channels, 3) for _ in in_channels])
        self.conv_seg = nn.Conv2d(channels, out_channels, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        laterals: list[torch.Tensor] = []
        for i, conv in enumerate(self.lateral_convs):
            laterals.append(conv(feats[i]))
        for i in range(len(laterals) - 1, 0, -1):
            up = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], mode="bilinear", align_corners=False)
            laterals[i - 1] = laterals[i - 1] + up
        outs: list[torch.Tensor] = []
        for i, conv in enumerate(self.fpn_convs):
            outs.append(conv(laterals[i]))
        fused = outs[0]
        for i in range(1, len(outs)):
            fused = fused + F.interpolate(outs[i], size=fused.shape[2:], mode="bilinear", align_corners=False)
        return self.conv_seg(self.dropout(fused))


class FeatureToPyramid(nn.Module):
    """Rescale four same-size token maps by ×4, ×2, ×1 and ×0.5."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2),
            nn.BatchNorm2d(embed_dim),
            nn.GELU(),
            nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2),
        )
        self.up2 = nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2)
        self.down2 = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.up4(feats[0]), self.up2(feats[1]), feats[2], self.down2(feats[3])]


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class ViTSegmenter(nn.Module):
    """Segmentation network returning logits (B, C, H, W) at the input size.

    C is `num_classes` with `decoder="ours"`; with `decoder="official"` it is 1 for a binary task (the official
    model's sigmoid output) and `num_classes` otherwise (`official_out_channels`).

    Args:
        backbone: "tinyusfm" or "usfm" (or a built `VisionTransformer`).
        num_classes: classes, background included.
        neck_channels: width of each pyramid level after a 1×1 projection; default embed_dim // 4
            (48 for TinyUSFM, the official decoder's width; 192 for USFM).
        fpn_channels: FPN width; default 128 for TinyUSFM (the official decoder's), 256 for USFM.
        drop_path_rate: stochastic depth of the last block (linear from 0 over the blocks).
        dropout: Dropout2d before the classifier.
        decoder: "ours" (default) or "official" (see the module docstring).
    """

    def __init__(
        self,
        backbone: str | VisionTransformer = "tinyusfm",
        num_classes: int = 2,
        img_size: int = 224,
        in_chans: int = 3,
        out_indices: Sequence[int] = DEFAULT_OUT_INDICES,
        neck_channels: int | None = None,
        fpn_channels: int | None = None,
        drop_path_rate: float = 0.1,
        dropout: float = 0.1,
        decoder: str = "ours",
    ) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if isinstance(backbone, str):
            backbone = build_backbone(
                backbone,
                img_size=img_size,
                in_chans=in_chans,
                drop_path_rate=drop_path_rate,
            )
        if len(out_indices) != 4:
            raise ValueError(f"the pyramid needs exactly four blocks, got out_indices={list(out_indices)}")
        self.backbone = backbone
        # The pooled feature's norm serves classification only: it gets no gradient from a segmentation loss, and
        # DistributedDataParallel stops on parameters without one. Frozen, not removed: official checkpoints load.
        if getattr(backbone, "fc_norm", None) is not None:
            backbone.fc_norm.requires_grad_(False)
        self.out_indices: list[int] = [int(i) for i in out_indices]
        self.num_classes = num_classes
        self.decoder = decoder
        dim = backbone.embed_dim
        neck = neck_channels or dim // 4
        width = fpn_channels or (128 if dim <= 384 else 256)
        self.out_channels = official_out_channels(num_classes) if decoder == "official" else num_classes
        if decoder == "official":
            self.neck = OfficialNeck(dim, OFFICIAL_RESCALES, neck / dim)
            self.decode_head = OfficialFPNHead([neck] * 4, width, self.out_channels, dropout)
            return
        self.pyramid = FeatureToPyramid(dim)
        self.neck = nn.ModuleList([nn.Conv2d(dim, neck, kernel_size=1) for _ in range(4)])
        self.fpn = FeaturePyramidNetwork(spatial_dims=2, in_channels_list=[neck] * 4, out_channels=width)
        self.scale_heads = nn.ModuleList([ConvBNReLU(width, width) for _ in range(4)])
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(width, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        _, tokens, _ = self.backbone.forward_features(x, self.out_indices, [])
        gh, gw = self.backbone.grid_size
        maps = [t[:, 1:].transpose(1, 2).reshape(t.shape[0], -1, gh, gw) for t in tokens]
        if hasattr(self, "decode_head"):  # the official decoder (a static test: TorchScript compiles one branch)
            logits = self.decode_head(self.neck(maps))
            return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        levels = self.pyramid(maps)
        inputs: dict[str, torch.Tensor] = OrderedDict()
        for i, neck in enumerate(self.neck):
            inputs[str(i)] = neck(levels[i])
        feats = list(self.fpn(inputs).values())
        size = feats[0].shape[-2:]
        fused = torch.zeros_like(feats[0])
        for i, head in enumerate(self.scale_heads):
            y = head(feats[i])
            if i > 0:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            fused = fused + y
        logits = self.classifier(self.dropout(fused))
        return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
