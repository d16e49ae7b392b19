"""Consistency-driven dynamic weighting: trust the teacher where its two masked views agree.

The teacher sees the same image under a spatial and a frequency mask. Where its two representations point the
same way (small angle θ, cosine near 1) the teacher "knows" the content regardless of which domain was removed,
so that knowledge is transferred with more weight; where they disagree the target is unreliable and is
down-weighted. "Dynamic": the weighting is blended in over training by a schedule, because early in training
every target is informative and sharp weighting would only slow the student down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .settings import OURS, PAPER, from_mapping, setting

GRANULARITIES = ("image", "token")
MAPPINGS = ("linear", "softmax", "power")
SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class ConsistencyWeighting:
    """Per-image or per-token weights from the cosine between the teacher's two views.

    enabled: False → all weights 1 (the "without consistency weighting" ablation).
    granularity: "image" (cosine of pooled teacher features) or "token" (cosine per patch token).
    mapping: "linear" w = (1 + cos) / 2; "power" w = ((1 + cos) / 2) ** (1 / temperature);
        "softmax" w = softmax(cos / temperature) over the batch (or over tokens) × count.
    temperature: sharpness for "softmax" and "power".
    normalize: rescale weights to mean 1 over the batch, so switching weighting on does not change the loss scale.
    schedule: how the weighting is blended in: "constant" (full from step 0), "linear" or "cosine" ramp from
        uniform weights to full weighting over `ramp_fraction` of training.
    """

    enabled: bool = setting(True, PAPER, "weight the transferred knowledge by the teacher's view consistency")
    granularity: str = setting("image", OURS, "cosine per image (mean patch token) | per token")
    mapping: str = setting("softmax", OURS, "cosine to weight: softmax over the batch | linear | power")
    temperature: float = setting(0.1, OURS, "sharpness of softmax / power")
    normalize: bool = setting(True, OURS, "rescale weights to mean 1 over the batch")
    schedule: str = setting("linear", OURS, "blend from uniform to full weighting: linear | cosine | constant")
    ramp_fraction: float = setting(0.3, OURS, "fraction of training over which the weighting is blended in")

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"consistency granularity {self.granularity!r}: choose one of {GRANULARITIES}")
        if self.mapping not in MAPPINGS:
            raise ValueError(f"consistency mapping {self.mapping!r}: choose one of {MAPPINGS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"consistency schedule {self.schedule!r}: choose one of {SCHEDULES}")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None = None) -> ConsistencyWeighting:
        """From the bundle's `consistency` section (unknown keys are an error)."""
        return from_mapping(cls, settings)

    def strength(self, progress: float) -> float:
        """Blend factor α in [0, 1] at training progress in [0, 1]: w_eff = (1 - α) + α · w."""
        if self.schedule == "constant" or self.ramp_fraction <= 0:
            return 1.0
        t = min(max(progress / self.ramp_fraction, 0.0), 1.0)
        return t if self.schedule == "linear" else 0.5 * (1.0 - math.cos(math.pi * t))

    def cosine(self, h_spa: torch.Tensor, h_freq: torch.Tensor) -> torch.Tensor:
        """Teacher tokens (B, 1+N, D) of both views → cosine (B,) per image or (B, N) per patch token."""
        if self.granularity == "image":
            return F.cosine_similarity(h_spa[:, 1:].mean(1), h_freq[:, 1:].mean(1), dim=-1)
        return F.cosine_similarity(h_spa[:, 1:], h_freq[:, 1:], dim=-1)

    def raw_weights(self, cos: torch.Tensor) -> torch.Tensor:
        cos = cos.float()
        if self.mapping == "linear":
            w = (1 + cos) / 2
        elif self.mapping == "power":
            w = ((1 + cos) / 2).clamp_min(0) ** (1.0 / self.temperature)
        else:
            flat = cos.flatten()
            w = (torch.softmax(flat / self.temperature, dim=0) * flat.numel()).view_as(cos)
        if self.normalize:
            w = w / w.mean().clamp_min(1e-8)
        return w

    def __call__(self, h_spa: torch.Tensor | None, h_freq: torch.Tensor | None, progress: float) -> torch.Tensor | None:
        """Weights (B,) or (B, N), or None when weighting is off or a view is missing (uniform weights)."""
        if not self.enabled or h_spa is None or h_freq is None:
            return None
        with torch.no_grad():
            w = self.raw_weights(self.cosine(h_spa, h_freq))
            alpha = self.strength(progress)
            return (1 - alpha) + alpha * w
