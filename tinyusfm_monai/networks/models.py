"""The two published backbones, with their architectures fixed (the checkpoint layouts of the official releases)."""

from __future__ import annotations

from torch import nn

from .vit import VisionTransformer


class TinyUSFM(VisionTransformer):
    """TinyUSFM student: ViT-Tiny/16 with 12 heads (not timm's 3), learned absolute position embedding.

    5,524,416 parameters without head. Checkpoint layout: `tests/data/official-checkpoint-keys-tinyusfm.json`.
    """

    def __init__(
        self,
        num_classes: int = 0,
        img_size: int = 224,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__(
            img_size=img_size,
            patch_size=16,
            in_chans=in_chans,
            num_classes=num_classes,
            embed_dim=192,
            depth=12,
            num_heads=12,
            mlp_ratio=4.0,
            qv_bias=False,
            use_abs_pos_emb=True,
            use_rel_pos_bias=False,
            init_values=None,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
        )


class USFM(VisionTransformer):
    """USFM teacher: BEiT-style ViT-B/16 (q/v bias, relative position bias per block, layer scale 0.1).

    There is no absolute position embedding. Checkpoint layout: `tests/data/official-checkpoint-keys-usfm.json`.
    """

    def __init__(
        self,
        num_classes: int = 0,
        img_size: int = 224,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        init_values: float = 0.1,
    ) -> None:
        super().__init__(
            img_size=img_size,
            patch_size=16,
            in_chans=in_chans,
            num_classes=num_classes,
            embed_dim=768,
            depth=12,
            num_heads=12,
            mlp_ratio=4.0,
            qv_bias=True,
            use_abs_pos_emb=False,
            use_rel_pos_bias=True,
            init_values=init_values,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
        )


BACKBONES = {"tinyusfm": TinyUSFM, "usfm": USFM}


def build_backbone(name: str, **kwargs) -> VisionTransformer:
    """Build a backbone by its short name ("tinyusfm" or "usfm")."""
    try:
        cls = BACKBONES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None
    return cls(**kwargs)


def backbone_of(model: nn.Module) -> tuple[VisionTransformer, str] | None:
    """The ViT backbone of `model` and the prefix of its parameter names: the model itself (prefix ""), or the
    `backbone` of a model that holds one (the segmenter, prefix "backbone."); None when there is none."""
    if isinstance(model, VisionTransformer):
        return model, ""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, VisionTransformer):
        return backbone, "backbone."
    return None
