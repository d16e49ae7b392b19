"""Distillation objective: weighted feature + attention distillation to the teacher, plus the student's own
pixel reconstruction.

    L = λ_feat · Σ_views Σ_layers mean_w(ℓ_feat) + λ_attn · Σ_views Σ_layers mean_w(KL) + λ_rec · L_rec

`mean_w` is the consistency-weighted mean over images/tokens (weights from `consistency.py`, all ones when the
weighting is off). Reconstruction is not weighted: it is the student's own masked-image-modelling signal and does
not depend on the teacher being right.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .masks import FREQUENCY, SPATIAL
from .settings import DistillSettings, from_mapping

FEATURE_LOSSES = ("mse", "smooth_l1", "cosine")
ATTN_LOSSES = ("kl", "mse")
RECON_REGIONS = ("masked", "all")


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) → (B, N, p·p·C), patches in row-major order (same order as the ViT tokens)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def _token_weights(weights: torch.Tensor | None, n_views: int, n_tokens: int) -> torch.Tensor | None:
    """Consistency weights (1 or V, B[, N]) → (V·B, 1+N) for token-level losses on the stacked views (a row of 1
    serves every view; the cls token gets the image's mean token weight)."""
    if weights is None:
        return None
    if weights.shape[0] == 1:
        weights = weights.expand(n_views, *weights.shape[1:])
    if weights.shape[0] != n_views:
        raise ValueError(f"consistency weights for {weights.shape[0]} views, the batch stacks {n_views}")
    w = weights.reshape(-1, *weights.shape[2:])  # V·B[, N]
    if w.ndim == 1:
        return w[:, None].expand(-1, n_tokens)
    return torch.cat((w.mean(1, keepdim=True), w), dim=1)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return values.mean()
    return (values * weights.to(values.dtype)).sum() / weights.sum().clamp_min(1e-8)


class DistillationLoss(nn.Module):
    """feature_loss: "mse" (default, MAE-Lite's hidden-state loss), "smooth_l1" or "cosine" per token.
    target_norm: layer-normalise teacher tokens (no affine) before matching, so the deep USFM blocks (layer scale,
        growing norms) do not dominate the sum; data2vec/MaskFeat practice.
    attn_loss: "kl" (teacher ‖ student per query row) or "mse" (MAE-Lite, on the softmax maps here).
    norm_pix: per-patch normalised pixel targets (MAE's norm_pix_loss, MAE-Lite default True).
    recon_region: "masked" (spatial view: masked patches only, MAE; frequency view: every patch, as the whole image
        is corrupted) or "all".
    """

    def __init__(
        self,
        feature_weight: float = 1.0,
        attn_weight: float = 1.0,
        recon_weight: float = 1.0,
        feature_loss: str = "mse",
        target_norm: bool = True,
        attn_loss: str = "kl",
        norm_pix: bool = True,
        recon_region: str = "masked",
        patch_size: int = 16,
    ) -> None:
        super().__init__()
        if feature_loss not in FEATURE_LOSSES:
            raise ValueError(f"feature_loss {feature_loss!r}: choose one of {FEATURE_LOSSES}")
        if attn_loss not in ATTN_LOSSES:
            raise ValueError(f"attn_loss {attn_loss!r}: choose one of {ATTN_LOSSES}")
        if recon_region not in RECON_REGIONS:
            raise ValueError(f"recon_region {recon_region!r}: choose one of {RECON_REGIONS}")
        self.feature_weight = feature_weight
        self.attn_weight = attn_weight
        self.recon_weight = recon_weight
        self.feature_loss = feature_loss
        self.target_norm = target_norm
        self.attn_loss = attn_loss
        self.norm_pix = norm_pix
        self.recon_region = recon_region
        self.patch_size = patch_size

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any] | DistillSettings | None = None, patch_size: int = 16
    ) -> DistillationLoss:
        """From the bundle's `distill` section (`DistillSettings`); `patch_size` is the student's."""
        s = from_mapping(DistillSettings, settings)
        return cls(
            s.feature_weight,
            s.attn_weight,
            s.recon_weight,
            s.feature_loss,
            s.target_norm,
            s.attn_loss,
            s.norm_pix,
            s.recon_region,
            patch_size,
        )

    def _feature_term(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-token loss (B, T)."""
        t = t.float()
        s = s.float()
        if self.target_norm:
            t = F.layer_norm(t, t.shape[-1:])
        if self.feature_loss == "mse":
            return (s - t).pow(2).mean(-1)
        if self.feature_loss == "smooth_l1":
            return F.smooth_l1_loss(s, t, reduction="none").mean(-1)
        return 1 - F.cosine_similarity(s, t, dim=-1)

    def _attn_term(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-query-token loss (B, T), averaged over heads and keys."""
        s = s.float()
        t = t.float()
        if self.attn_loss == "kl":
            kl = (t * (torch.log(t.clamp_min(1e-8)) - torch.log(s.clamp_min(1e-8)))).sum(-1)
            return kl.mean(1)
        return (s - t).pow(2).mean(-1).mean(1) * s.shape[-1]  # × keys: a row sums to 1, keep the scale O(1)

    def _recon_term(
        self, recon: torch.Tensor, clean: torch.Tensor, views: list[str], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        target = patchify(clean.float(), self.patch_size)
        if self.norm_pix:
            mean = target.mean(-1, keepdim=True)
            var = target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        b = clean.shape[0]
        losses, counts = [], []
        for i, view in enumerate(views):
            per_patch = (recon[i * b : (i + 1) * b].float() - target).pow(2).mean(-1)  # B, N
            if self.recon_region == "masked" and view == SPATIAL:
                region = masks[SPATIAL].flatten(1).to(per_patch.dtype)
            else:
                region = torch.ones_like(per_patch)
            losses.append((per_patch * region).sum())
            counts.append(region.sum())
        return torch.stack(losses).sum() / torch.stack(counts).sum().clamp_min(1.0)

    def forward(
        self,
        student: dict[str, object],
        teacher: dict[str, object] | None,
        clean: torch.Tensor,
        views: list[str],
        masks: dict[str, torch.Tensor],
        weights: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Returns {"loss": total, "feature": ..., "attn": ..., "recon": ...} (unweighted terms for logging).
        `teacher` may be None when neither the feature nor the attention term is on (reconstruction only)."""
        zero = clean.new_zeros((), dtype=torch.float32)
        terms = {"feature": zero, "attn": zero, "recon": zero}
        n_views = len(views)
        if self.feature_weight > 0:
            s_feats, t_feats = student["features"], teacher["features"]  # type: ignore[index]
            total = zero
            for s, t in zip(s_feats, t_feats):  # type: ignore[call-overload]
                w = _token_weights(weights, n_views, s.shape[1])
                total = total + _weighted_mean(self._feature_term(s, t), w)
            terms["feature"] = total
        if self.attn_weight > 0:
            total = zero
            for s, t in zip(student["attn"], teacher["attn"]):  # type: ignore[call-overload, index]
                w = _token_weights(weights, n_views, s.shape[2])
                total = total + _weighted_mean(self._attn_term(s, t), w)
            terms["attn"] = total
        if self.recon_weight > 0 and student.get("recon") is not None:
            terms["recon"] = self._recon_term(student["recon"], clean, views, masks)  # type: ignore[arg-type]
        terms["loss"] = (
            self.feature_weight * terms["feature"]
            + self.attn_weight * terms["attn"]
            + self.recon_weight * terms["recon"]
        )
        return terms


__all__ = ["DistillationLoss", "patchify", "SPATIAL", "FREQUENCY"]
