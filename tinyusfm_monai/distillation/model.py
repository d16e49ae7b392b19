"""The trainable side of distillation (student + projection heads + light decoder) and the frozen teacher.

The teacher is deliberately *not* a submodule of `DistillationModel`: it is frozen, so it has no place in the
optimizer, in DDP's gradient buckets or in the (resumable) training checkpoints, which would otherwise carry 86M
constant parameters every epoch. `network_def` of the bundle is the bare student; this module only wraps it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tinyusfm_monai.networks import VisionTransformer, load_pretrained
from tinyusfm_monai.networks.vit import Block

from .settings import DistillSettings, from_mapping

logger = logging.getLogger(__name__)

NO_TEACHER_WEIGHTS_BANNER = (
    "\n" + "!" * 100 + "\n"
    "!!! NO TEACHER WEIGHTS GIVEN: the teacher is a RANDOMLY INITIALISED USFM-architecture network.\n"
    "!!! The student will learn to imitate noise. This is only useful to test the pipeline.\n"
    "!!! For a real distillation pass --teacher_weights /path/to/USFM_latest.pth (see large_files.yml).\n" + "!" * 100
)


TEACHER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class FrozenTeacher:
    """A USFM (or any `VisionTransformer`) in eval mode without gradients, returning distillation targets.

    Args:
        network: the teacher architecture.
        weights: path of the official USFM checkpoint (loaded strictly with `load_pretrained`); "" or None keeps
            the random initialisation and logs a loud warning.
        feature_layers / attn_layers: zero-based blocks whose tokens / attention maps are the targets.
        device: where the teacher runs.
        dtype: "float32", or "bfloat16" / "float16": the frozen weights are cast once, so no autocast re-casts
            86M parameters every step (on a GPU that copy was 20 % of the step). Inputs are cast to it; the
            outputs stay in it (the losses compute in float32).
        compile: run the forward through `torch.compile` (pays off on GPUs for long runs; off by default).
    """

    def __init__(
        self,
        network: VisionTransformer,
        weights: str | None = None,
        feature_layers: Sequence[int] = (3, 7, 11),
        attn_layers: Sequence[int] = (11,),
        device: str | torch.device = "cpu",
        dtype: str = "float32",
        compile: bool = False,
    ) -> None:
        if weights:
            report = load_pretrained(network, weights)
            logger.info("teacher weights: %s", report)
            self.pretrained = True
        else:
            logger.warning(NO_TEACHER_WEIGHTS_BANNER)
            self.pretrained = False
        if dtype not in TEACHER_DTYPES:
            raise ValueError(f"teacher dtype {dtype!r}: choose one of {sorted(TEACHER_DTYPES)}")
        self.dtype = TEACHER_DTYPES[dtype]
        self.network = network.to(device=device, dtype=self.dtype).eval().requires_grad_(False)
        self.feature_layers = list(feature_layers)
        self.attn_layers = list(attn_layers)
        for i in self.feature_layers + self.attn_layers:
            if not 0 <= i < network.depth:
                raise ValueError(f"teacher layer {i} out of range for a {network.depth}-block teacher")
        self._forward = torch.compile(self.network.forward_features) if compile else self.network.forward_features

    @property
    def embed_dim(self) -> int:
        return self.network.embed_dim

    @property
    def num_heads(self) -> int:
        return self.network.blocks[0].attn.num_heads

    def _features(self, x: torch.Tensor, feature_layers: list[int], attn_layers: list[int]) -> tuple:
        self.network.eval()  # cheap guard: nothing may ever put the teacher into train mode (dropout, drop-path)
        with torch.autocast(device_type=x.device.type, enabled=False):  # the weights already have their dtype
            return self._forward(x.to(self.dtype), feature_layers, attn_layers)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> dict[str, object]:
        final, tokens, attns = self._features(x, self.feature_layers, self.attn_layers)
        return {"final": final, "features": tokens, "attn": attns, "pooled": self.network.pool(final)}

    @torch.no_grad()
    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """fc_norm(mean of patch tokens) only: the feature the coreset clusters (no targets kept)."""
        final, _, _ = self._features(x, [], [])
        return self.network.pool(final)


class LightDecoder(nn.Module):
    """Student tokens → pixels of each patch: a narrow linear embed, a few transformer blocks, a linear head.

    "Light" as in MAE's asymmetric design: it exists only to make the student encode enough to reconstruct, and is
    dropped after distillation (it is not exported).
    """

    def __init__(
        self,
        in_dim: int,
        num_patches: int,
        patch_size: int,
        out_chans: int = 3,
        dim: int = 128,
        depth: int = 2,
        num_heads: int = 4,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, dim)
        self.pos = nn.Parameter(torch.zeros(1, num_patches, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList([Block(dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, patch_size * patch_size * out_chans)

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(patch_tokens) + self.pos
        for blk in self.blocks:
            x, _ = blk(x)
        return self.head(self.norm(x))


class DistillationModel(nn.Module):
    """Student + per-layer projection heads (student width → teacher width) + head adapters + light decoder.

    forward(x) runs the student once on a batch (all masked views stacked along the batch axis, so DDP sees one
    forward per step) and returns projected features, attention maps and reconstructed patches. Components with
    weight 0 are not built at all, so an ablation has no dead parameters.
    """

    def __init__(
        self,
        student: VisionTransformer,
        teacher: FrozenTeacher,
        student_layers: Sequence[int] = (3, 7, 11),
        student_attn_layers: Sequence[int] = (11,),
        feature_weight: float = 1.0,
        attn_weight: float = 1.0,
        recon_weight: float = 1.0,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
    ) -> None:
        super().__init__()
        self.student = student
        self.student_layers = list(student_layers) if feature_weight > 0 else []
        self.student_attn_layers = list(student_attn_layers) if attn_weight > 0 else []
        if feature_weight > 0 and len(self.student_layers) != len(teacher.feature_layers):
            raise ValueError(
                f"student layers {self.student_layers} and teacher layers {teacher.feature_layers} "
                "must pair up one to one"
            )
        if attn_weight > 0 and len(self.student_attn_layers) != len(teacher.attn_layers):
            raise ValueError(
                f"student attention layers {self.student_attn_layers} and teacher attention layers "
                f"{teacher.attn_layers} must pair up one to one"
            )
        for i in self.student_layers + self.student_attn_layers:
            if not 0 <= i < student.depth:
                raise ValueError(f"student layer {i} out of range for a {student.depth}-block student")
        self.projectors = nn.ModuleList(
            [
                nn.Sequential(
                    nn.LayerNorm(student.embed_dim, eps=1e-6), nn.Linear(student.embed_dim, teacher.embed_dim)
                )
                for _ in self.student_layers
            ]
        )
        s_heads, t_heads = student.blocks[0].attn.num_heads, teacher.num_heads
        # MAE-Lite's adapter when head counts differ: a 1x1 conv over the head axis (log-space, then renormalised)
        self.attn_adapters = nn.ModuleList(
            [nn.Conv2d(s_heads, t_heads, 1) if s_heads != t_heads else nn.Identity() for _ in self.student_attn_layers]
        )
        self.decoder = (
            LightDecoder(
                student.embed_dim,
                student.patch_embed.num_patches,
                student.patch_size,
                student.in_chans,
                decoder_dim,
                decoder_depth,
                decoder_heads,
            )
            if recon_weight > 0
            else None
        )

    @classmethod
    def from_settings(
        cls,
        student: VisionTransformer,
        teacher: FrozenTeacher,
        settings: Mapping[str, Any] | DistillSettings | None = None,
    ) -> DistillationModel:
        """From the bundle's `distill` section (`DistillSettings`)."""
        s = from_mapping(DistillSettings, settings)
        return cls(
            student,
            teacher,
            s.student_layers,
            s.student_attn_layers,
            s.feature_weight,
            s.attn_weight,
            s.recon_weight,
            s.decoder_dim,
            s.decoder_depth,
            s.decoder_heads,
        )

    def forward(self, x: torch.Tensor) -> dict[str, object]:
        final, tokens, attns = self.student.forward_features(x, self.student_layers, self.student_attn_layers)
        features = [proj(t) for proj, t in zip(self.projectors, tokens)]
        adapted: list[torch.Tensor] = []
        for adapter, a in zip(self.attn_adapters, attns):
            if isinstance(adapter, nn.Identity):
                adapted.append(a)
            else:
                adapted.append(F.softmax(adapter(torch.log(a.clamp_min(1e-8))), dim=-1))
        recon = self.decoder(final[:, 1:]) if self.decoder is not None else None
        return {"final": final, "features": features, "attn": adapted, "recon": recon}
