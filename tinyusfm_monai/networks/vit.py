"""One ViT implementation for both the TinyUSFM student and the USFM teacher.

The two official models differ only in a few switches (absolute position embedding vs. per-block
relative position bias, full qkv bias vs. BEiT-style q/v bias, layer scale), so they share every
module here. Parameter and buffer names follow the official checkpoints exactly
(`tests/data/official-checkpoint-keys-*.json`), which is what makes `load_pretrained` a plain
`load_state_dict` after prefix handling.

Everything on the forward path is TorchScript-compatible, because the bundles export with
`monai.bundle ckpt_export` (scripting) and `onnx_export`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers import DropPath
from torch import nn

LAYER_NORM_EPS = 1e-6


class PatchEmbed(nn.Module):
    """Non-overlapping patches via a strided convolution (`patch_embed.proj` in both checkpoints)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"image size {img_size} is not a multiple of the patch size {patch_size}")
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def relative_position_index(grid: tuple[int, int]) -> torch.Tensor:
    """BEiT's index into the relative-position table, with three extra rows for cls↔token pairs.

    Entry (i, j) for patch tokens is the offset (dy, dx) between patches i and j, mapped into the
    (2H-1)(2W-1) grid; the last three table rows hold cls→token, token→cls and cls→cls.
    """
    h, w = grid
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")).flatten(1)  # 2, N
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # N, N, 2
    rel[:, :, 0] += h - 1
    rel[:, :, 1] += w - 1
    rel[:, :, 0] *= 2 * w - 1
    num_rel = (2 * h - 1) * (2 * w - 1) + 3
    index = torch.zeros((h * w + 1, h * w + 1), dtype=torch.long)
    index[1:, 1:] = rel.sum(-1)
    index[0, 0:] = num_rel - 3
    index[0:, 0] = num_rel - 2
    index[0, 0] = num_rel - 1
    return index


class Attention(nn.Module):
    """Multi-head self-attention with the two official bias layouts.

    `qv_bias=False`: one `qkv.bias` (TinyUSFM, MAE-Lite/timm layout).
    `qv_bias=True`: `q_bias` and `v_bias`, no key bias (USFM, BEiT layout).
    `window` set: a relative position bias table per block (USFM).
    Uses `scaled_dot_product_attention` (fast on CPU) unless the attention map itself is wanted.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qv_bias: bool = False,
        window: tuple[int, int] | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qv_bias = qv_bias
        self.qkv = nn.Linear(dim, dim * 3, bias=not qv_bias)
        if qv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.register_parameter("q_bias", None)
            self.register_parameter("v_bias", None)
        self.use_rel_pos = window is not None
        if window is not None:
            num_rel = (2 * window[0] - 1) * (2 * window[1] - 1) + 3
            self.relative_position_bias_table = nn.Parameter(torch.zeros(num_rel, num_heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
            # Persistent: the official USFM checkpoints carry it, so our state dict matches theirs.
            self.register_buffer("relative_position_index", relative_position_index(window))
        else:
            self.register_parameter("relative_position_bias_table", None)
            self.register_buffer("relative_position_index", None)
        self.attn_drop_p = attn_drop
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def relative_position_bias(self) -> torch.Tensor:
        """(heads, N, N) additive bias from the table."""
        table = self.relative_position_bias_table
        index = self.relative_position_index
        assert table is not None and index is not None
        n = index.shape[0]
        return table[index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n, c = x.shape
        qkv = self.qkv(x)  # module call (not F.linear) so FLOP hooks and quantisation see it
        if self.q_bias is not None and self.v_bias is not None:
            qkv = qkv + torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        qkv = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        bias: torch.Tensor | None = None
        if self.use_rel_pos:
            bias = self.relative_position_bias().unsqueeze(0).to(q.dtype)
        weights: torch.Tensor | None = None
        if need_weights:
            logits = (q * self.scale) @ k.transpose(-2, -1)
            if bias is not None:
                logits = logits + bias
            weights = logits.softmax(dim=-1)
            out = self.attn_drop(weights) @ v
        else:
            drop = self.attn_drop_p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop, scale=self.scale)
        out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out)), weights


class Block(nn.Module):
    """Pre-norm transformer block; `init_values` adds BEiT layer scale (`gamma_1`, `gamma_2`)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qv_bias: bool = False,
        window: tuple[int, int] | None = None,
        init_values: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads, qv_bias=qv_bias, window=window, attn_drop=attn_drop, proj_drop=drop)
        # MONAI's DropPath draws as timm 0.5.4 (the official code's): a bernoulli_(keep) mask per sample, / keep
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        if init_values is not None and init_values > 0:
            self.gamma_1 = nn.Parameter(init_values * torch.ones(dim))
            self.gamma_2 = nn.Parameter(init_values * torch.ones(dim))
        else:
            self.register_parameter("gamma_1", None)
            self.register_parameter("gamma_2", None)

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, weights = self.attn(self.norm1(x), need_weights)
        if self.gamma_1 is not None and self.gamma_2 is not None:
            x = x + self.drop_path(self.gamma_1 * y)
            x = x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))
        else:
            x = x + self.drop_path(y)
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, weights


class VisionTransformer(nn.Module):
    """ViT backbone with mean-pooled output, as both official models use it.

    `num_classes=0` returns the pooled feature `fc_norm(mean of patch tokens)` (cls token excluded),
    exactly as the official code does; `num_classes>0` adds a linear `head`.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 0,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qv_bias: bool = False,
        use_abs_pos_emb: bool = True,
        use_rel_pos_bias: bool = False,
        init_values: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.num_features = embed_dim
        self.depth = depth
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        if use_abs_pos_emb:
            self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.register_parameter("pos_embed", None)
        self.pos_drop = nn.Dropout(drop_rate)
        window = self.patch_embed.grid_size if use_rel_pos_bias else None
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            [
                Block(
                    embed_dim,
                    num_heads,
                    mlp_ratio,
                    qv_bias,
                    window,
                    init_values,
                    drop_rate,
                    attn_drop_rate,
                    r,
                )
                for r in rates
            ]
        )
        self.fc_norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_weights)

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.patch_embed.grid_size

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with the cls token prepended (and the absolute position embedding added)."""
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        return self.pos_drop(x)

    def forward_features(
        self, x: torch.Tensor, out_indices: list[int], attn_indices: list[int]
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """One pass that also hands out intermediate tokens and attention maps.

        Returns the final tokens (B, 1+N, D), the tokens after each block in `out_indices`
        (zero-based), and the softmax attention maps (B, heads, 1+N, 1+N) of the blocks in
        `attn_indices`. Distillation and the segmentation decoder use this instead of hooks.
        """
        x = self.embed(x)
        tokens: list[torch.Tensor] = []
        attns: list[torch.Tensor] = []
        for i, blk in enumerate(self.blocks):
            x, w = blk(x, i in attn_indices)
            if w is not None:
                attns.append(w)
            if i in out_indices:
                tokens.append(x)
        return x, tokens, attns

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc_norm(tokens[:, 1:].mean(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _, _ = self.forward_features(x, [], [])
        return self.head(self.pool(tokens))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
