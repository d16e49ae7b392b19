"""LUMINOUS (Belasso et al., BMC Musculoskelet Disord 2020) as data.sonography.ai and public loaders ship it.

    Luminous/
      B-mode/  <stem>_Bmode.tif, ...            (B-mode images, 341)
      Masks/   <stem>_Mask1.tif [<stem>_Mask2.tif]   (0/255; two files where both muscles are outlined)

Left and right multifidus are one class here, so all masks of an image are united into one binary mask
(0/255 -> 0/1). An image without any mask is reported and left out.

Patient: the paper images 109 subjects (prone and standing, left and right); the subject is taken as the first
all-digit token of <stem>, so all images of a subject share a split.

Layout source: public LUMINOUS PyTorch loaders (folders `B-mode` and `Masks`, image `<stem>_Bmode.tif`, masks
grouped by the name before the last `_`, a second mask ending in `2`) and a dataset card giving TIFF and 341
images. Assumed, not confirmed: the exact <stem> naming, hence where the subject number sits in it; if the
stems carry no number the split silently becomes image-level (check `patient` in the conversion report).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np

from tinyusfm_monai.data.converters.base import RawSample, SampleError
from tinyusfm_monai.data.converters.common import binary_mask, files_with_suffix, read_image, require_dir, safe_id

_BMODE_TAG = re.compile(r"[_-]?b-?mode$", re.IGNORECASE)


def _image_stem(path: Path) -> str:
    return _BMODE_TAG.sub("", path.stem)


def _mask_stem(path: Path) -> str:
    cut = path.stem.rfind("_")
    return path.stem[:cut] if cut > 0 else path.stem


def _subject(stem: str) -> str | None:
    return next((t for t in re.split(r"[_\-\s]+", stem) if t.isdigit()), None)


def _united_mask(paths: list[Path]) -> np.ndarray:
    masks = [binary_mask(p) for p in paths]
    if any(m.shape != masks[0].shape for m in masks):
        raise SampleError(f"masks {[p.name for p in paths]} differ in size: {[m.shape for m in masks]}")
    return np.maximum.reduce(masks)


def scan(src: Path) -> Iterator[RawSample]:
    src = Path(src)
    image_dir, mask_dir = require_dir(src, "B-mode"), require_dir(src, "Masks")
    masks: dict[str, list[Path]] = defaultdict(list)
    for mask in files_with_suffix(mask_dir):
        masks[_mask_stem(mask)].append(mask)
    for image in files_with_suffix(image_dir):
        stem = _image_stem(image)
        own = masks.get(stem, [])
        yield RawSample(
            id=safe_id(stem),
            source=image,
            load_image=partial(read_image, image),
            load_mask=partial(_united_mask, own) if own else None,
            mask_source=own[0] if own else None,
            patient=_subject(stem),
            issue=None if own else f"no mask named {stem}_<tag> in {mask_dir}",
        )
