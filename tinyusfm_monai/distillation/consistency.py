"""Consistency-driven dynamic weighting: trust the teacher where its masked views agree.

The teacher sees the same image under a spatial and a frequency mask. Where its representations point the same
way (small angle θ, cosine near 1) the teacher "knows" the content regardless of which domain was removed, so that
knowledge is transferred with more weight; where they disagree the target is unreliable and is down-weighted.
"Dynamic": the weighting is blended in over training by a schedule.

Why this design (issue 12, measured on the junk phantom pool):

* mapping "rank" (default): per batch, each image's score becomes its percentile p in [0, 1] and
  w = floor + (1 − floor) · p, normalised to mean 1. Only the order inside the batch matters (the batch's common
  shift, e.g. how hard this step's mask draw was, cancels), and the effective sample size is fixed by the floor
  (floor 0.25: ESS ≈ 0.88 of the batch) whatever the teacher's cosine scale. The previous softmax over the batch
  (T 0.1) kept an ESS of ~3 of 16 images. "robust", "linear", "softmax", "power" remain options.
* reading "views" (cos(h_spatial, h_frequency), the paper's angle) or "clean": the teacher also encodes the clean
  image and each view gets its own weight cos(h_clean, h_view) ("does the teacher still see the same image under
  this mask?"); one more teacher forward per image.
* content "token_spread" (option): content-free frames (blank, dim, air, saturated) have nothing for a mask to
  destroy, so the teacher represents them *most* consistently and consistency alone ranks them highest. The
  spread of the teacher's patch tokens (already computed, no extra pass) is low exactly for them; with
  `content="token_spread"` the score is the product of the consistency percentile and the spread percentile
  ("reliable and informative"), mapped by the same rank rule (so the ESS bound holds).

The weights always carry a leading view axis: (1, B[, N]) when one weight serves every view, (V, B[, N]) for the
"clean" reading (rows in the order of the views dict).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .masks import CLEAN
from .settings import OURS, PAPER, from_mapping, setting

GRANULARITIES = ("image", "token")
MAPPINGS = ("rank", "robust", "linear", "softmax", "power")
READINGS = ("views", "clean")
CONTENTS = ("none", "token_spread")
SCHEDULES = ("constant", "linear", "cosine")


def effective_sample_size(w: torch.Tensor) -> torch.Tensor:
    """ESS / n = (Σw)² / (n Σw²) along the last axis (1 = uniform weights, 1/n = one sample carries all)."""
    w = w.float()
    return w.sum(-1).pow(2) / (w.shape[-1] * w.pow(2).sum(-1).clamp_min(1e-12))


def batch_percentile(c: torch.Tensor) -> torch.Tensor:
    """Per-row percentile in [0, 1] of each entry of (R, n); ties get their average rank (blank frames often tie).
    Sort-based: O(n log n) time and O(n) memory, so token granularity (n = batch × tokens) stays cheap."""
    n = c.shape[-1]
    if n == 1:
        return torch.ones_like(c, dtype=torch.float32)
    c = c.float().contiguous()
    ordered = c.sort(-1).values
    first = torch.searchsorted(ordered, c, right=False)
    after = torch.searchsorted(ordered, c, right=True)
    return (first + after - 1).float() / 2 / (n - 1)


def token_spread(tokens: torch.Tensor) -> torch.Tensor:
    """Content measure from tokens the teacher already produced: mean distance of the patch tokens (B, 1+N, D) to
    their mean, relative to the mean's norm; (B,). Low for frames without content (blank, dim, air)."""
    t = tokens[:, 1:].float()
    mu = t.mean(1, keepdim=True)
    return (t - mu).norm(dim=-1).mean(1) / mu.norm(dim=-1).squeeze(1).clamp_min(1e-8)


@dataclass
class ConsistencyWeighting:
    """Per-image (or per-token) weights from the teacher's consistency across the domain masks.

    See the module docstring for why the defaults; `enabled=False` gives uniform weights (the ablation).
    """

    enabled: bool = setting(True, PAPER, "weight the transferred knowledge by the teacher's view consistency")
    reading: str = setting("views", PAPER, "views: cos(spatial, frequency view) | clean: cos(clean, each view)")
    granularity: str = setting("image", OURS, "cosine per image (mean patch token) | per token")
    mapping: str = setting("rank", OURS, "score to weight: rank (percentile with a floor) | robust | linear | ...")
    floor: float = setting(0.25, OURS, "smallest weight of rank / robust before normalisation (ESS ≈ 0.88)")
    temperature: float = setting(1.0, OURS, "sharpness of softmax / power / robust")
    content: str = setting("none", OURS, "none | token_spread: score × content percentile (flags empty frames)")
    normalize: bool = setting(True, OURS, "rescale weights to mean 1 over the batch")
    schedule: str = setting("linear", OURS, "blend from uniform to full weighting: linear | cosine | constant")
    ramp_fraction: float = setting(0.3, OURS, "fraction of training over which the weighting is blended in")

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("reading", self.reading, READINGS),
            ("granularity", self.granularity, GRANULARITIES),
            ("mapping", self.mapping, MAPPINGS),
            ("content", self.content, CONTENTS),
            ("schedule", self.schedule, SCHEDULES),
        ):
            if value not in allowed:
                raise ValueError(f"consistency {name} {value!r}: choose one of {allowed}")
        if not 0.0 <= self.floor <= 1.0:
            raise ValueError(f"consistency floor {self.floor} must be in [0, 1]")
        if self.content != "none" and self.granularity != "image":
            raise ValueError("consistency content needs granularity 'image'")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None = None) -> ConsistencyWeighting:
        """From the bundle's `consistency` section (unknown keys are an error)."""
        return from_mapping(cls, settings)

    @property
    def needs_clean(self) -> bool:
        """True when the teacher must also encode the clean image."""
        return self.enabled and self.reading == CLEAN

    def strength(self, progress: float) -> float:
        """Blend factor α in [0, 1] at training progress in [0, 1]: w_eff = (1 − α) + α · w."""
        if self.schedule == "constant" or self.ramp_fraction <= 0:
            return 1.0
        t = min(max(progress / self.ramp_fraction, 0.0), 1.0)
        return t if self.schedule == "linear" else 0.5 * (1.0 - math.cos(math.pi * t))

    def cosine(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Teacher tokens (B, 1+N, D) of two views → cosine (B,) per image or (B, N) per patch token."""
        if self.granularity == "image":
            return F.cosine_similarity(a[:, 1:].float().mean(1), b[:, 1:].float().mean(1), dim=-1)
        return F.cosine_similarity(a[:, 1:].float(), b[:, 1:].float(), dim=-1)

    def raw_weights(self, score: torch.Tensor) -> torch.Tensor:
        """Scores (B,) or (B, N) → weights of the same shape (mean 1 when `normalize`)."""
        c = score.float()
        flat = c.reshape(1, -1)  # one batch (image granularity) or all tokens of the batch
        if self.mapping == "rank":
            w = self.floor + (1 - self.floor) * batch_percentile(flat)
        elif self.mapping == "robust":
            med = flat.median(-1, keepdim=True).values
            mad = (flat - med).abs().median(-1, keepdim=True).values * 1.4826 + 1e-6
            w = self.floor + (1 - self.floor) * torch.sigmoid((flat - med) / (mad * self.temperature))
        elif self.mapping == "linear":
            w = (1 + flat) / 2
        elif self.mapping == "power":
            w = ((1 + flat) / 2).clamp_min(0) ** (1.0 / self.temperature)
        else:
            w = torch.softmax(flat / self.temperature, dim=-1) * flat.shape[-1]
        w = w.reshape(c.shape)
        if self.normalize:
            w = w / w.mean().clamp_min(1e-8)
        return w

    def scores(self, h: Mapping[str, torch.Tensor | None]) -> torch.Tensor | None:
        """The per-image scores (V, B[, N]) the weights are made from (None: weighting impossible)."""
        if self.reading == "views":
            if h.get("spatial") is None or h.get("frequency") is None:
                return None
            score = self.cosine(h["spatial"], h["frequency"])[None]  # type: ignore[arg-type]
        else:
            clean = h.get(CLEAN)
            views = [v for k, v in h.items() if k != CLEAN and v is not None]
            if clean is None or not views:
                return None
            score = torch.stack([self.cosine(clean, v) for v in views])
        if self.content == "token_spread":
            sources = [h[CLEAN]] if h.get(CLEAN) is not None else [v for v in h.values() if v is not None]
            spread = torch.stack([token_spread(v) for v in sources]).mean(0)  # type: ignore[arg-type]
            score = batch_percentile(score) * batch_percentile(spread[None])
        return score

    def __call__(self, h: Mapping[str, torch.Tensor | None], progress: float) -> torch.Tensor | None:
        """Teacher final tokens per view (keys "spatial", "frequency", and "clean" for the clean reading) →
        weights (1 or V, B[, N]), or None when weighting is off or a view is missing (uniform weights)."""
        if not self.enabled:
            return None
        with torch.no_grad():
            score = self.scores(h)
            if score is None:
                return None
            w = torch.stack([self.raw_weights(s) for s in score])
            alpha = self.strength(progress)
            return (1 - alpha) + alpha * w


def weight_stats(w: torch.Tensor) -> dict[str, float]:
    """What a distillation run logs: ESS / batch (per view row), weight std, share of weights < 0.5, min, max."""
    rows = w.float().reshape(w.shape[0], -1)
    return {
        "ess": float(effective_sample_size(rows).mean()),
        "std": float(rows.std(-1).mean()),
        "share_below_half": float((rows < 0.5).float().mean()),
        "min": float(rows.min()),
        "max": float(rows.max()),
    }
