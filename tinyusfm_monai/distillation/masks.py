"""Domain-separated masks: one image, two corrupted views (spatial patches, frequency band-stop rings).

USFM was pretrained with exactly these two corruptions (spatial noise *addition*-recovery, frequency band-stop
masking), so its representations under them are meaningful, and the agreement between the two tells how
reliable the teacher is on that image (`consistency.py`). The same masks corrupt the images of the teacher's own
pretraining (`pretrain.py`).

Why the defaults (issue 12, measured on the junk phantom pool):

* spatial `fill="add_noise"`: USFM's pretext adds noise to the masked patches, the content stays underneath;
  replacing the patches ("noise", the previous default) destroys it. The other fills remain options.
* frequency rings over [0, `max_radius`] (1 = Nyquist along an axis; the spectrum corners belong to the last
  ring), not [0, sqrt(2)]: with rings to sqrt(2) ring 0 held nearly all the energy, and whether a draw stopped it
  decided the teacher's consistency (cosine 0.08 vs 0.33), i.e. the draw, not the image, set the weight.
* `protect_low_bands=1`: the lowest ring (organ layout, brightness) is never stopped.

Every random number comes from `generator` (a `torch.Generator` on the data's device, whose state the training
checkpoint saves): no host-side draws and pageable copies on a GPU step (issue 13), and a resumed run draws the
same masks. Without a generator the global RNG of the data's device is used.
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
CLEAN = "clean"
FILLS = ("add_noise", "noise", "zero", "mean")
SPACINGS = ("linear", "log")


def _rand(shape: tuple[int, ...], device: torch.device | None, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform numbers drawn where they are used: from `generator` (on its device) or the device's global RNG."""
    if generator is not None:
        return torch.rand(shape, generator=generator, device=generator.device)
    return torch.rand(shape, device=device)


def _randn(shape: torch.Size, device: torch.device, dtype: torch.dtype, generator: torch.Generator | None):
    if generator is not None:
        return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return torch.randn(shape, device=device, dtype=dtype)


@dataclass
class SpatialMask:
    """Random square patches corrupted by `fill` (see the module docstring for the defaults)."""

    patch_size: int = setting(16, MAE_LITE, "side of a masked square in pixels (the ViT patch)")
    ratio: float = setting(0.5, OURS, "fraction of patches corrupted (noise is added, so not MAE's 0.75)")
    fill: str = setting(
        "add_noise", MAE_LITE, "add_noise (x + noise: USFM's noise addition) | noise (patch replaced) | zero | mean"
    )
    noise_std: float = setting(1.0, OURS, "std of the noise in normalised units (image std ~1)")
    shared_draw: bool = setting(False, OURS, "one patch pattern for the whole batch")

    def __post_init__(self) -> None:
        if self.fill not in FILLS:
            raise ValueError(f"spatial mask fill {self.fill!r}: choose one of {FILLS}")
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"spatial mask ratio {self.ratio} must be in [0, 1)")

    def draw(self, b: int, h: int, w: int, device: torch.device, generator: torch.Generator | None = None):
        """Patch mask (B, H/p, W/p) bool, True = corrupted."""
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image {h}x{w} is not a multiple of the mask patch size {p}")
        gh, gw = h // p, w // p
        n = gh * gw
        n_mask = int(round(self.ratio * n))
        rows = 1 if self.shared_draw else b
        order = _rand((rows, n), device, generator).argsort(dim=1)
        mask = torch.zeros(rows, n, dtype=torch.bool, device=device)
        mask.scatter_(1, order[:, :n_mask], True)
        return mask.expand(b, n).reshape(b, gh, gw)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) → (corrupted x, patch mask (B, H/p, W/p) bool, True = corrupted)."""
        b, _, h, w = x.shape
        mask = self.draw(b, h, w, x.device, generator)
        p = self.patch_size
        pixel = mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1)  # B,1,H,W
        if self.fill in ("add_noise", "noise"):
            noise = _randn(x.shape, x.device, x.dtype, generator) * self.noise_std
            filler = x + noise if self.fill == "add_noise" else noise
        elif self.fill == "zero":
            filler = torch.zeros_like(x)
        else:
            filler = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
        return torch.where(pixel, filler, x), mask


def radial_frequency(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """Normalised radial frequency of each FFT bin: 0 at DC, 1 at the Nyquist frequency along an axis (sqrt(2) in
    the corners)."""
    fy = torch.fft.fftfreq(h, device=device).abs() * 2
    fx = torch.fft.fftfreq(w, device=device).abs() * 2
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def ring_edges(num_bands: int, max_radius: float = 1.0, spacing: str = "linear", log_start: float = 0.05):
    """num_bands + 1 ring edges over [0, max_radius]; "log": ring 0 = [0, log_start], then log-spaced."""
    if spacing == "linear":
        return torch.linspace(0.0, max_radius, num_bands + 1)
    inner = torch.logspace(math.log10(log_start), math.log10(max_radius), num_bands)
    return torch.cat((torch.zeros(1), inner))


def ring_index(
    h: int,
    w: int,
    num_bands: int,
    max_radius: float = 1.0,
    spacing: str = "linear",
    log_start: float = 0.05,
    device: torch.device | None = None,
) -> torch.Tensor:
    """(H, W) ring of each FFT bin; bins beyond `max_radius` (the spectrum corners) go to the last ring."""
    radius = radial_frequency(h, w, device)
    edges = ring_edges(num_bands, max_radius, spacing, log_start).to(radius.device)
    return (torch.bucketize(radius.contiguous(), edges, right=True) - 1).clamp(0, num_bands - 1)


@dataclass
class FrequencyMask:
    """Band-stop rings of the 2D Fourier spectrum (USFM's frequency band-stop masking).

    [0, `max_radius`] is cut into `num_bands` rings; the lowest `protect_low_bands` are never stopped; per image
    `ratio` of the others (rounded, at least one) are removed. `bands` instead fixes the stopped rings as
    [low, high] pairs of normalised radius, the same for every image.
    """

    num_bands: int = setting(8, OURS, "radial rings from DC to `max_radius` (band-stop: USFM)")
    ratio: float = setting(0.25, OURS, "fraction of the stoppable rings stopped per image (at least one)")
    max_radius: float = setting(1.0, OURS, "outer edge of the rings (1 = Nyquist; corners join the last ring)")
    protect_low_bands: int = setting(1, OURS, "lowest rings never stopped (the image's coarse content stays)")
    spacing: str = setting("linear", OURS, "ring edges: linear | log (log_start, then log-spaced)")
    log_start: float = setting(0.05, OURS, "outer radius of ring 0 with log spacing")
    bands: Sequence[Sequence[float]] | None = setting(None, OURS, "fixed [low, high] rings instead (1 = Nyquist)")
    keep_dc: bool = setting(True, OURS, "keep the image mean (DC bin) even when its ring is stopped")
    shared_draw: bool = setting(False, OURS, "the same stopped rings for the whole batch")

    def __post_init__(self) -> None:
        if self.spacing not in SPACINGS:
            raise ValueError(f"frequency mask spacing {self.spacing!r}: choose one of {SPACINGS}")
        if self.bands is None:
            if self.num_bands < 1 or not 0.0 < self.ratio <= 1.0:
                raise ValueError("frequency mask needs num_bands >= 1 and 0 < ratio <= 1, or explicit bands")
            if not 0 <= self.protect_low_bands < self.num_bands:
                raise ValueError(
                    f"protect_low_bands {self.protect_low_bands} must leave a ring to stop (num_bands {self.num_bands})"
                )

    @property
    def stoppable(self) -> int:
        return self.num_bands - self.protect_low_bands

    @property
    def n_stop(self) -> int:
        return min(self.stoppable, max(1, int(round(self.ratio * self.stoppable))))

    def stop_mask(
        self, b: int, h: int, w: int, device: torch.device | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, H, W) bool, True where the spectrum is removed."""
        if self.bands is not None:
            radius = radial_frequency(h, w, device)
            stop = torch.zeros(h, w, dtype=torch.bool, device=device)
            for low, high in self.bands:
                stop |= (radius >= low) & (radius < high)
            stop = stop.expand(b, h, w).clone()
        else:
            ring = ring_index(h, w, self.num_bands, self.max_radius, self.spacing, self.log_start, device)
            rows = 1 if self.shared_draw else b
            chosen = _rand((rows, self.stoppable), device, generator).argsort(dim=1)[:, : self.n_stop]
            stopped = torch.zeros(rows, self.num_bands, dtype=torch.bool, device=ring.device)
            stopped.scatter_(1, chosen.to(ring.device) + self.protect_low_bands, True)
            stop = stopped.expand(b, -1)[:, ring]  # B,H,W
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
    generator the global RNG is used.
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

    def coin(self, n: int, p: float, device: torch.device) -> torch.Tensor:
        """n booleans, each True with probability p, drawn from the masker's generator."""
        return _rand((n,), device, self.generator).to(device) < p

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        if self.hflip_prob <= 0:
            return x
        flip = self.coin(x.shape[0], self.hflip_prob, x.device)
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
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> DomainMasker:
    """Python entry point with the config's argument names (`DomainMasker.from_settings` reads the section)."""
    return DomainMasker.from_settings(
        {
            "spatial_enabled": spatial_enabled,
            "frequency_enabled": frequency_enabled,
            "spatial": spatial,
            "frequency": frequency,
            "hflip_prob": hflip_prob,
        },
        device,
        seed,
    )
