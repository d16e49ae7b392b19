"""ViT → multi-scale pyramid → FPN decoder, the official TinyUSFM segmentation design (SPEC §3).

A plain ViT has one 1/16-scale feature map. Taking tokens after blocks 4/6/8/12 and rescaling
them ×4/×2/×1/×0.5 (transposed convolutions up, max-pooling down) gives the 1/4…1/32 pyramid an
FPN expects, so the same decoder serves the 192-wide student and the 768-wide teacher.
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
    """Segmentation network returning logits (B, num_classes, H, W) at the input size.

    Args:
        backbone: "tinyusfm" or "usfm" (or a built `VisionTransformer`).
        num_classes: output channels, background included.
        neck_channels: width of each pyramid level after a 1×1 projection; default embed_dim // 4
            (48 for TinyUSFM, as the official head; 192 for USFM).
        fpn_channels: FPN width; default 128 for TinyUSFM, 256 for USFM (widths scale with the backbone).
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
    ) -> None:
        super().__init__()
        if isinstance(backbone, str):
            backbone = build_backbone(backbone, img_size=img_size, in_chans=in_chans, drop_path_rate=drop_path_rate)
        if len(out_indices) != 4:
            raise ValueError(f"the pyramid needs exactly four blocks, got out_indices={list(out_indices)}")
        self.backbone = backbone
        # The pooled feature's norm serves classification only: it gets no gradient from a segmentation loss, and
        # DistributedDataParallel stops on parameters without one. Frozen, not removed: official checkpoints load.
        if getattr(backbone, "fc_norm", None) is not None:
            backbone.fc_norm.requires_grad_(False)
        self.out_indices: list[int] = [int(i) for i in out_indices]
        self.num_classes = num_classes
        dim = backbone.embed_dim
        neck = neck_channels or dim // 4
        width = fpn_channels or (128 if dim <= 384 else 256)
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
