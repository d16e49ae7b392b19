"""`Resized` with PIL-style anti-aliasing (`torch.nn.functional.interpolate(antialias=True)`).

MONAI's `Resize(anti_aliasing=True)` smooths the whole full-size image with a Gaussian (skimage's
recipe) before interpolating: on a 768 x 1024 ultrasound frame that is ~10x the cost of the resize
itself and the largest part of the bundle's preprocessing on CPU. PyTorch's antialiased bilinear
interpolation is one pass with a triangle filter whose support scales with the downsampling factor,
which is what PIL's `resize(BILINEAR)` does, i.e. the official TinyUSFM pipeline: it is faster *and*
closer to the tensor the pretrained weights expect (tests/test_preprocessing.py).

Everything else is MONAI's: the metadata, the affine and the invertible trace come from `Resize`
(called without anti-aliasing; the trace does not record it), so `Invertd` maps predictions back
exactly as before. Label maps (nearest, no anti-aliasing) take MONAI's path unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import Resize, Resized

_ANTIALIAS_MODES = {"bilinear": "bilinear", "bicubic": "bicubic"}


class AntialiasResize(Resize):
    """`Resize` whose anti-aliased bilinear/bicubic downsampling of 2D images is torch's `antialias=True`."""

    def __call__(
        self,
        img: torch.Tensor,
        mode: str | None = None,
        align_corners: bool | None = None,
        anti_aliasing: bool | None = None,
        anti_aliasing_sigma: Any = None,
        dtype: Any = None,
        lazy: bool | None = None,
    ) -> torch.Tensor:
        aa = self.anti_aliasing if anti_aliasing is None else anti_aliasing
        sigma = self.anti_aliasing_sigma if anti_aliasing_sigma is None else anti_aliasing_sigma
        _mode = str(self.mode if mode is None else mode)
        lazy_ = self.lazy if lazy is None else lazy
        fast = aa and sigma is None and not lazy_ and _mode in _ANTIALIAS_MODES and img.ndim == 3
        aa_arg = False if fast else anti_aliasing
        out = super().__call__(img, mode, align_corners, aa_arg, anti_aliasing_sigma, dtype, lazy)
        if not fast or tuple(out.shape[1:]) == tuple(img.shape[1:]):
            return out
        plain = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
        _align = self.align_corners if align_corners is None else align_corners
        resized = F.interpolate(
            plain[None].to(out.dtype),
            size=tuple(out.shape[1:]),
            mode=_ANTIALIAS_MODES[_mode],
            align_corners=_align,
            antialias=True,
        )[0]
        target = out.as_tensor() if isinstance(out, MetaTensor) else out
        target.copy_(resized)  # in place: keeps the MetaTensor's metadata and trace
        return out


class AntialiasResized(Resized):
    """Dictionary version: `Resized` with `AntialiasResize` as its resizer (same arguments)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resizer = AntialiasResize(
            spatial_size=self.resizer.spatial_size, size_mode=self.resizer.size_mode, lazy=self.resizer.lazy
        )
