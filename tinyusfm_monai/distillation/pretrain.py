"""USFM-style masked-image-model pretraining of a teacher (configs/pretrain.json of the distillation bundle).

USFM (arXiv 2401.00153) pretrains with "spatial-frequency dual masked image modeling": spatial *noise
addition*-recovery and frequency *band-stop* masking; its code was never released. This is our reading of it:

* encoder: any USFM-architecture `VisionTransformer` (`teacher_def`: the full USFM by default, any width/depth
  by override); it sees the whole corrupted image (SimMIM-style: no mask tokens, no dropped tokens), so the
  pretrained weights are used exactly as at inference and as the distillation teacher;
* corruptions: the distillation masks (`masks.py`, the `masks` section of the config): per image one domain
  (`views="split"`: spatial noise addition on `ratio` of the patches, or frequency band-stop rings with the
  low-frequency core kept), or both on the same image (`views="both"`), or one domain only;
* light decoder (`model.LightDecoder`, dropped after pretraining) regressing the clean pixels of each patch;
* loss: squared (or absolute) error to the clean, optionally per-patch normalised, pixels: on the corrupted
  patches of a spatial view, on every patch of a frequency view (the whole image is corrupted).

Training runs in MONAI's `SupervisedTrainer` with `PretrainIteration` as its iteration (AMP as the trainer says:
bfloat16 on CUDA needs no grad scaler), the project's `TrainingCheckpoint` (exact resume, the mask generator
included), `torchrun` through `multi_gpu_pretrain.json`, and ends by writing the encoder in the official USFM key
layout (`ExportBackbone`), which `load_pretrained` and the `--teacher_weights` of train.json / coreset.json read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from ignite.engine import Engine
from torch import nn

from tinyusfm_monai.networks import VisionTransformer

from .engine import optimizer_step
from .losses import patchify
from .masks import DomainMasker
from .model import LightDecoder
from .settings import OURS, from_mapping, setting
from .shards import normalize_on_device

VIEWS = ("split", "both", "spatial", "frequency")
LOSSES = ("l2", "l1")


@dataclass
class PretrainSettings:
    """The pretraining objective (config section `pretrain` of pretrain.json)."""

    views: str = setting("split", OURS, "corruption per image: split (one domain each) | both | spatial | frequency")
    decoder_dim: int = setting(128, OURS, "width of the light pixel decoder")
    decoder_depth: int = setting(2, OURS, "decoder blocks (2 beat a linear head by +0.03 probe on the phantom)")
    decoder_heads: int = setting(4, OURS, "decoder attention heads")
    norm_pix: bool = setting(False, OURS, "per-patch normalised pixel targets (did not help on the phantom)")
    loss: str = setting("l2", OURS, "pixel loss: l2 | l1")
    clip_grad_norm: float = setting(1.0, OURS, "gradient-norm clipping (0 = off)")

    def __post_init__(self) -> None:
        if self.views not in VIEWS:
            raise ValueError(f"pretrain views {self.views!r}: choose one of {VIEWS}")
        if self.loss not in LOSSES:
            raise ValueError(f"pretrain loss {self.loss!r}: choose one of {LOSSES}")


class MaskedImageModel(nn.Module):
    """Encoder (the teacher being pretrained) + light decoder from its patch tokens to the patches' pixels."""

    def __init__(self, encoder: VisionTransformer, decoder_dim: int = 128, decoder_depth: int = 2, heads: int = 4):
        super().__init__()
        self.encoder = encoder
        self.decoder = LightDecoder(
            encoder.embed_dim,
            encoder.patch_embed.num_patches,
            encoder.patch_size,
            encoder.in_chans,
            decoder_dim,
            decoder_depth,
            heads,
        )

    @classmethod
    def from_settings(
        cls, encoder: VisionTransformer, settings: Mapping[str, Any] | PretrainSettings | None = None
    ) -> MaskedImageModel:
        s = from_mapping(PretrainSettings, settings)
        return cls(encoder, s.decoder_dim, s.decoder_depth, s.decoder_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        final, _, _ = self.encoder.forward_features(x, [], [])
        return self.decoder(final[:, 1:])


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: no decay on biases, norms, tokens and relative-position tables (BEiT practice)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 and "relative_position" not in name and "token" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def corrupt(x: torch.Tensor, masker: DomainMasker, views: str, vit_patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The corrupted batch and, per image and ViT patch, the share of the patch that counts in the loss (B, N).

    Which domain each image gets ("split") is drawn from the masker's generator, like every other random number.
    """
    b, _, h, w = x.shape
    n = (h // vit_patch) * (w // vit_patch)
    if views == "split" and masker.spatial is not None and masker.frequency is not None:
        use_spa = masker.coin(b, 0.5, x.device)
        use_freq = ~use_spa
    else:
        spa = views in ("split", "both", "spatial") and masker.spatial is not None
        freq = views in ("split", "both", "frequency") and masker.frequency is not None
        use_spa = torch.full((b,), spa, device=x.device)
        use_freq = torch.full((b,), freq, device=x.device)
    out = x
    weight = torch.zeros(b, n, device=x.device)
    if masker.frequency is not None and bool(use_freq.any()):
        xf, _ = masker.frequency(out, masker.generator)
        out = torch.where(use_freq[:, None, None, None], xf, out)
        weight[use_freq] = 1.0
    if masker.spatial is not None and bool(use_spa.any()):
        xs, mask = masker.spatial(out, masker.generator)
        out = torch.where(use_spa[:, None, None, None], xs, out)
        s = masker.spatial.patch_size
        pixel = mask.repeat_interleave(s, 1).repeat_interleave(s, 2).float().unsqueeze(1)
        share = F.avg_pool2d(pixel, vit_patch).flatten(1)  # part of each ViT patch that was corrupted
        weight = torch.where(use_spa[:, None], torch.maximum(weight, share), weight)
    return out, weight


def mim_loss(
    pred: torch.Tensor, clean: torch.Tensor, weight: torch.Tensor, patch: int, norm_pix: bool = False, loss="l2"
) -> torch.Tensor:
    """Per-patch pixel error to the clean image, averaged with the corruption weights (B, N)."""
    target = patchify(clean.float(), patch)
    if norm_pix:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    err = (pred.float() - target).abs() if loss == "l1" else (pred.float() - target).pow(2)
    return (err.mean(-1) * weight).sum() / weight.sum().clamp_min(1.0)


class PretrainIteration:
    """`iteration_update` for `SupervisedTrainer`: one masked-image-modelling step of the teacher.

    The clean batch (uint8 from the decoded pool, normalised on the device) is flipped and corrupted with the
    masker's device generator, the model reconstructs the clean pixels, the optimizer steps (AMP-aware).
    """

    def __init__(
        self,
        masker: DomainMasker,
        settings: Mapping[str, Any] | PretrainSettings | None = None,
        grad_scaler: torch.amp.GradScaler | None = None,
        image_key: str = "image",
    ) -> None:
        self.masker = masker
        self.settings = from_mapping(PretrainSettings, settings)
        self.grad_scaler = grad_scaler
        self.image_key = image_key

    def __call__(self, engine: Engine, batchdata: Mapping[str, Any]) -> dict[str, Any]:
        device = engine.state.device
        x = batchdata[self.image_key]
        x = (x.as_tensor() if hasattr(x, "as_tensor") else x).to(device, non_blocking=engine.non_blocking)
        clean = self.masker.augment(normalize_on_device(x))
        model = engine.network.module if hasattr(engine.network, "module") else engine.network
        patch = getattr(model, "encoder", model).patch_size
        corrupted, weight = corrupt(clean, self.masker, self.settings.views, patch)
        amp = bool(getattr(engine, "amp", False)) and device.type == "cuda"
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, enabled=amp, **(getattr(engine, "amp_kwargs", None) or {})):
            pred = engine.network(corrupted)
            loss = mim_loss(pred, clean, weight, patch, self.settings.norm_pix, self.settings.loss)
        optimizer_step(engine, loss, self.grad_scaler if amp else None, self.settings.clip_grad_norm)
        return {"image": clean, "pred": None, "label": None, "loss": loss.detach()}
