"""Channel handling: every image the networks see has three channels, as the official RGB pipeline."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform


class EnsureRGB(Transform):
    """Channel-first image → three channels: grey is repeated, an alpha channel dropped.

    Ultrasound PNGs are often grayscale (1 channel, or 2 with alpha) while the pretrained backbones expect the
    official `PIL.convert("RGB")` input: three identical channels.
    """

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        c = img.shape[0]
        if c == 3:
            return img
        if c in (1, 2):  # L or LA
            return img[:1].repeat(3, *([1] * (img.ndim - 1)))
        if c == 4:  # RGBA
            return img[:3]
        raise ValueError(f"cannot make an RGB image from {c} channels")


class EnsureRGBd(MapTransform):
    """Dictionary version of `EnsureRGB`.

    Args:
        keys: keys of the channel-first images to convert.
        allow_missing_keys: do not raise when a key is missing.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = EnsureRGB()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d
