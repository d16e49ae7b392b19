"""BUSI (Al-Dhabyani et al., Data in Brief 2020) as the Cairo University page and its Kaggle mirror ship it.

    Dataset_BUSI_with_GT/
      benign/     benign (1).png, benign (1)_mask.png, benign (4)_mask_1.png, ...
      malignant/  malignant (1).png, malignant (1)_mask.png, ...
      normal/     normal (1).png, normal (1)_mask.png   (all-zero masks)

One scan feeds both BUSI tasks: the folder is the class, the masks are the lesion. Some images have several
lesions, each in its own `_mask_N.png`; they are united into one binary lesion mask.

Layout source: the Kaggle mirror's folder listing and public BUSI loaders (class folders, `_mask` and
`_mask_N` files next to the image).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np

from tinyusfm_monai.data.converters.base import RawSample, SampleError
from tinyusfm_monai.data.raw_io import binary_mask, child, find_root, image_files, read_image, safe_id

CLASSES = ("benign", "malignant", "normal")
_MASK_NAME = re.compile(r"^(?P<stem>.+?)_mask(?:_\d+)?$", re.IGNORECASE)


def _is_root(d: Path) -> bool:
    return sum(child(d, c) is not None and child(d, c).is_dir() for c in CLASSES) >= 2


def _union_of_masks(paths: list[Path]) -> np.ndarray:
    masks = [binary_mask(p) for p in paths]
    if len({m.shape for m in masks}) > 1:
        raise SampleError(f"lesion mask files differ in size: {[m.shape for m in masks]}")
    return np.maximum.reduce(masks).astype(np.uint8)


def scan(src: Path) -> Iterator[RawSample]:
    root = find_root(Path(src), _is_root, "BUSI class folders benign/ malignant/ normal/")
    for class_name in CLASSES:
        folder = child(root, class_name)
        if folder is None:
            continue
        files = image_files(folder)
        masks_of: dict[str, list[Path]] = {}
        for f in files:
            m = _MASK_NAME.match(f.stem)
            if m:
                masks_of.setdefault(m.group("stem"), []).append(f)
        for f in files:
            if _MASK_NAME.match(f.stem):
                continue
            masks = masks_of.get(f.stem, [])
            yield RawSample(
                id=safe_id(f.stem),
                source=f,
                load_image=partial(read_image, f),
                label=class_name,
                load_mask=partial(_union_of_masks, masks) if masks else None,
                mask_source=masks[0] if masks else None,
            )
