"""Domain-separated masks: one image, two corrupted views (spatial patches, frequency band-stop rings).

USFM was pretrained with exactly these two corruptions (spatial noise addition-recovery, frequency band-stop
masking), so its representations under them are meaningful, and the agreement between the two tells how
reliable the teacher is on that image (`consistency.py`). All randomness comes from the global torch RNG, so
the checkpointed RNG state makes a resumed run draw the same masks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .settings import MAE_LITE, OURS, MaskSettings, from_mapping, setting

SPATIAL = "spatial"
FREQUENCY = "frequency"
FILLS = ("noise", "zero", "mean")


def _rand(shape: tuple[int, ...], device: torch.device | None, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform numbers drawn where they are used: from `generator` (on its device) or the global RNG."""
    if generator is not None:
        return torch.rand(shape, generator=generator, device=generator.device)
    return torch.rand(shape).to(device)


def _randn(shape: torch.Size, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    if generator is not None:
        return torch.randn(shape, generator=generator, device=generator.device)
    return torch.randn(shape).to(device)


@dataclass
class SpatialMask:
    """Random square patches replaced by `fill`.

    patch_size: side of a masked patch in pixels (default 16 = the ViT patch, MAE/MAE-Lite).
    ratio: fraction of patches masked (default 0.75, MAE-Lite).
    fill: "noise" (Gaussian, USFM's noise addition), "zero" (0 in normalised space = the dataset mean colour),
        "mean" (the image's own per-channel mean).
    noise_std: std of the noise fill in normalised units.
    """

    patch_size: int = setting(16, MAE_LITE, "side of a masked square in pixels (the ViT patch)")
    ratio: float = setting(0.75, MAE_LITE, "fraction of patches masked")
    fill: str = setting("noise", MAE_LITE, "what replaces a masked patch: noise (USFM noise addition) | zero | mean")
    noise_std: float = setting(1.0, OURS, "std of the noise fill in normalised units")

    def __post_init__(self) -> None:
        if self.fill not in FILLS:
            raise ValueError(f"spatial mask fill {self.fill!r}: choose one of {FILLS}")
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"spatial mask ratio {self.ratio} must be in [0, 1)")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) → (masked x, patch mask (B, H/p, W/p) bool, True = masked); random draws from
        `generator` (on x's device) or the global RNG."""
        b, c, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image {h}x{w} is not a multiple of the mask patch size {p}")
        gh, gw = h // p, w // p
        n = gh * gw
        n_mask = int(round(self.ratio * n))
        order = _rand((b, n), x.device, generator).argsort(dim=1)
        mask = torch.zeros(b, n, dtype=torch.bool, device=x.device)
        mask.scatter_(1, order[:, :n_mask], True)
        mask = mask.view(b, gh, gw)
        pixel = mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1)  # B,1,H,W
        if self.fill == "noise":
            filler = _randn(x.shape, x.device, generator).to(x.dtype) * self.noise_std
        elif self.fill == "zero":
            filler = torch.zeros_like(x)
        else:
            filler = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
        return torch.where(pixel, filler, x), mask


def radial_frequency(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """Normalised radial frequency of each FFT bin, 0 at DC, 1 at the Nyquist frequency along an axis."""
    fy = torch.fft.fftfreq(h, device=device).abs() * 2
    fx = torch.fft.fftfreq(w, device=device).abs() * 2
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


@dataclass
class FrequencyMask:
    """Band-stop rings of the 2D Fourier spectrum.

    The radial frequency range [0, max] (max = sqrt(2), the spectrum corner) is cut into `num_bands` equal rings;
    per image, `ratio` of them (rounded, at least one) are removed. `bands` instead fixes the stopped rings as
    [low, high] pairs of normalised radius (1 = Nyquist), the same for every image. `keep_dc` keeps the image mean
    (the DC bin) even when the first ring is stopped, so the view is not just a brightness shift.
    """

    num_bands: int = setting(8, OURS, "equal radial rings from DC to the spectrum corner (band-stop: USFM)")
    ratio: float = setting(0.25, OURS, "fraction of rings stopped per image (at least one)")
    bands: Sequence[Sequence[float]] | None = setting(None, OURS, "fixed [low, high] rings instead (1 = Nyquist)")
    keep_dc: bool = setting(True, OURS, "keep the image mean (DC bin) even when the first ring is stopped")

    def __post_init__(self) -> None:
        if self.bands is None and (self.num_bands < 1 or not 0.0 < self.ratio <= 1.0):
            raise ValueError("frequency mask needs num_bands >= 1 and 0 < ratio <= 1, or explicit bands")

    def stop_mask(
        self, b: int, h: int, w: int, device: torch.device | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, H, W) bool, True where the spectrum is removed."""
        radius = radial_frequency(h, w, device)
        if self.bands is not None:
            stop = torch.zeros(h, w, dtype=torch.bool, device=device)
            for low, high in self.bands:
                stop |= (radius >= low) & (radius < high)
            stop = stop.expand(b, h, w).clone()
        else:
            edges = torch.linspace(0, math.sqrt(2) + 1e-6, self.num_bands + 1, device=device)
            ring = (torch.bucketize(radius.contiguous(), edges, right=True) - 1).clamp(0, self.num_bands - 1)
            n_stop = max(1, int(round(self.ratio * self.num_bands)))
            chosen = _rand((b, self.num_bands), device, generator).argsort(dim=1)[:, :n_stop]
            stopped = torch.zeros(b, self.num_bands, dtype=torch.bool, device=device)
            stopped.scatter_(1, chosen, True)
            stop = stopped[:, ring]  # B,H,W
        if self.keep_dc:
            stop[:, 0, 0] = False
        return stop

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) → (band-stopped x, spectrum stop mask (B, H, W))."""
        b, _, h, w = x.shape
        stop = self.stop_mask(b, h, w, x.device, generator)
        spectrum = torch.fft.fft2(x.float())
        spectrum = spectrum * (~stop).unsqueeze(1)
        return torch.fft.ifft2(spectrum).real.to(x.dtype), stop


class DomainMasker:
    """Makes the views a distillation step trains on: `{"spatial": (x, mask), "frequency": (x, mask)}`.

    Either mask may be None (spatial-only / frequency-only ablation). `hflip_prob` is the only augmentation:
    it is applied to the clean image before masking.

    Every random number (flips, masked patches, stopped rings, noise) is drawn from `generator`, a
    `torch.Generator` on the training device: on a GPU no random numbers are drawn on the host and copied over
    (that was 112 of 299 ms per 128-image step), and its state goes into the training checkpoint (the bundle
    passes `masker.generator` to `TrainingCheckpoint`), so a resumed run draws the same masks. Without a
    generator the global torch RNG is used.
    """

    def __init__(
        self,
        spatial: SpatialMask | None = None,
        frequency: FrequencyMask | None = None,
        hflip_prob: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        if spatial is None and frequency is None:
            raise ValueError("at least one of the spatial and frequency masks must be enabled")
        self.spatial = spatial
        self.frequency = frequency
        self.hflip_prob = hflip_prob
        self.generator = generator

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any] | None = None, device: str | torch.device = "cpu", seed: int = 0
    ) -> DomainMasker:
        """From the bundle's `masks` section (`MaskSettings` plus the `spatial` and `frequency` mask fields), with
        a generator on `device` seeded with `seed`."""
        settings = dict(settings or {})
        spatial, frequency = settings.pop("spatial", None), settings.pop("frequency", None)
        view = from_mapping(MaskSettings, settings)
        return cls(
            from_mapping(SpatialMask, spatial) if view.spatial_enabled else None,
            from_mapping(FrequencyMask, frequency) if view.frequency_enabled else None,
            view.hflip_prob,
            torch.Generator(device=torch.device(device)).manual_seed(int(seed)),
        )

    @property
    def views(self) -> list[str]:
        return [name for name, m in ((SPATIAL, self.spatial), (FREQUENCY, self.frequency)) if m is not None]

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        if self.hflip_prob <= 0:
            return x
        flip = _rand((x.shape[0],), x.device, self.generator) < self.hflip_prob
        return torch.where(flip[:, None, None, None], x.flip(-1), x)

    def __call__(self, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if self.spatial is not None:
            out[SPATIAL] = self.spatial(x, self.generator)
        if self.frequency is not None:
            out[FREQUENCY] = self.frequency(x, self.generator)
        return out


def build_masker(
    spatial_enabled: bool = True,
    frequency_enabled: bool = True,
    spatial: dict | None = None,
    frequency: dict | None = None,
    hflip_prob: float = 0.5,
) -> DomainMasker:
    """Python entry point with the config's argument names (`DomainMasker.from_settings` reads the section)."""
    return DomainMasker.from_settings(
        {
            "spatial_enabled": spatial_enabled,
            "frequency_enabled": frequency_enabled,
            "spatial": spatial,
            "frequency": frequency,
            "hflip_prob": hflip_prob,
        }
    )
