"""Augmentations of the `paper` preset that MONAI has no exact equivalent for.

The official segmentation script (`utils/data_processing_seg.py` of MacDunno/TinyUSFM) augments 8-bit images:
a gamma on the uint8 values (truncated back to uint8), a scale-up then random crop, and a contrast jitter that
blends towards the image's grey mean and clips to 0-255. MONAI's `RandAdjustContrastd` works on the min-max range
and `RandZoomd` crops the centre, so these three are written here. They expect the image in 0-255 (before the
scaling to [0, 1]); the parameters and the order are the official ones, the random draws come from MONAI's
per-transform generator (the same distributions, not the same numbers as torchvision/numpy in the official code).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform


class RandGammaUint8d(RandomizableTransform, MapTransform):
    """With probability `prob`: x ← floor(255·(x/255)^(1/g)) with g drawn from {0.5, 0.6, …, 1.9}
    (the official `np.random.randint(5, 20) / 10` on uint8 values).

    Args:
        keys: image keys (values 0-255).
        prob: probability of applying it.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.5, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.gamma = 1.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self.gamma = self.R.randint(5, 20) / 10.0

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key])
            y = torch.floor(torch.pow(x.float().clamp(0, 255) / 255.0, 1.0 / self.gamma) * 255.0)
            d[key] = _like(x, y)
        return d


class RandScaleCropd(RandomizableTransform, MapTransform):
    """With probability `prob`: scale by s ~ U(1, 1.3) to (int(H·s), int(W·s)) (bilinear image, nearest label), then
    crop H × W at a uniformly drawn position, the same window for every key (the official scale-then-random-crop;
    MONAI's `RandZoomd` crops the centre).

    Args:
        keys: image and label keys.
        prob: probability of applying it.
        scale: range of the scale factor.
        mode: interpolation per key ("bilinear" / "nearest").
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        scale: Sequence[float] = (1.0, 1.3),
        mode: str | Sequence[str] = ("bilinear", "nearest"),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.scale = (float(scale[0]), float(scale[1]))
        self.mode = [mode] * len(self.keys) if isinstance(mode, str) else list(mode)
        self.factor = 1.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self.factor = float(self.R.uniform(*self.scale))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        offset: tuple[int, int] | None = None
        for key, mode in self.key_iterator(d, self.mode):
            x = torch.as_tensor(d[key])
            h, w = x.shape[-2:]
            size = (int(h * self.factor), int(w * self.factor))
            kwargs = {"align_corners": False} if mode == "bilinear" else {}
            y = F.interpolate(x[None].float(), size=size, mode=mode, **kwargs)[0]
            if mode == "bilinear":  # back to 8-bit values, as PIL's resize of the official uint8 image
                y = y.round().clamp(0, 255)
            if offset is None:
                offset = (int(self.R.randint(0, size[0] - h + 1)), int(self.R.randint(0, size[1] - w + 1)))
            y = y[..., offset[0] : offset[0] + h, offset[1] : offset[1] + w].to(x.dtype)
            d[key] = _like(x, y)
        return d


class RandContrastJitterd(RandomizableTransform, MapTransform):
    """With probability `prob`: x ← clip(m + c·(x − m), 0, 255), c ~ U(0.5, 2), m = the mean grey value rounded
    (PIL's contrast enhancement, which the official `ColorJitter(contrast=(0.5, 2))` applies to PIL images).

    Args:
        keys: image keys (values 0-255; 3 channels use the ITU-R 601 grey, 1 channel itself).
        prob: probability of applying it.
        contrast: range of the contrast factor.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        contrast: Sequence[float] = (0.5, 2.0),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.contrast = (float(contrast[0]), float(contrast[1]))
        self.factor = 1.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self.factor = float(self.R.uniform(*self.contrast))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key])
            xf = x.float()
            grey = (xf[0] * 0.299 + xf[1] * 0.587 + xf[2] * 0.114) if xf.shape[0] == 3 else xf[0]
            mean = float(np.floor(float(grey.mean()) + 0.5))
            y = torch.floor((mean + self.factor * (xf - mean)).clamp(0, 255))
            d[key] = _like(x, y)
        return d


def _like(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`y` with `x`'s dtype (and metadata when `x` is a MetaTensor)."""
    from monai.data import MetaTensor

    y = y.to(x.dtype) if x.dtype.is_floating_point else y.round().to(x.dtype)
    if isinstance(x, MetaTensor):
        return MetaTensor(y, meta=x.meta)
    return y
