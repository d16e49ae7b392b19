"""Channel handling (every image the networks see has three channels, as the official RGB pipeline) and the
per-item fault tolerance of the inference postprocessing (`SkipOnErrorCompose`)."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import Compose, MapTransform, Transform

from tinyusfm_monai.utils.names import display_name, root_cause, scrub

logger = logging.getLogger(__name__)


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


def _item_file(data: Any, key: str) -> str:
    item = data.get(key) if isinstance(data, Mapping) else None
    meta = getattr(item, "meta", None) or {}
    name = meta.get("filename_or_obj", "") if isinstance(meta, Mapping) else ""
    return str(name[0] if isinstance(name, (list, tuple)) and name else name)


class SkipOnErrorCompose(Compose):
    """`Compose` that, when a step fails on one item, logs the item's file and the cause and passes the item on
    unchanged (nothing is written for it), so the run goes on with the others.

    Why: MONAI's evaluator runs the postprocessing per item inside an ignite event handler, and an exception
    there ends the whole run: one 1 x 1 image that `SaveImaged`'s writer cannot write, or one full disk folder,
    aborted inference over a folder of thousands. Preprocessing has the same protection per item in
    `SkipUnreadableDataset`. The file is named by its file name only (folders may carry patient names).

    Args:
        transforms: as `monai.transforms.Compose`.
        stage: named in the log line ("postprocessing").
        name_key: key of the image whose MetaTensor names the file (`filename_or_obj`).
        kwargs: the other arguments of `monai.transforms.Compose`.
    """

    def __init__(
        self, transforms: Any = None, stage: str = "postprocessing", name_key: str = "image", **kwargs: Any
    ) -> None:
        super().__init__(transforms, **kwargs)
        self.stage = stage
        self.name_key = name_key
        self.skipped = 0

    def __call__(self, input_: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(input_, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 - one bad item is reported and skipped, the run goes on
            self.skipped += 1
            name = _item_file(input_, self.name_key)
            logger.error("skipped %s: %s failed: %s", display_name(name), self.stage, scrub(root_cause(error), name))
            return input_
