"""Kaggle Ultrasound Nerve Segmentation (2016) as the competition's data page ships it.

    train/  <subject>_<image>.tif, <subject>_<image>_mask.tif    (580x420 grey; masks 0/255)
    test/   <n>.tif                                              (unlabelled; skipped)
    train_masks.csv                                              (run-length copy of the masks; unused)

The brachial plexus mask is binarised to 1. Many masks are empty by design (no nerve in view): they are kept
(reported as warnings) and scored by the task's empty-mask rule. The subject number is the patient, so a
subject's frames stay in one split. Kaggle's train folder has 5,635 labelled images; UniUS-Bench's table says
5,735. The set is known to contain near-identical frames with contradicting masks; the conversion report's
duplicate check lists cross-split copies.

Layout source: UltraSam's converter (`train/<patient>_<frame>.tif`, `_mask.tif`) and the competition page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from tinyusfm_monai.data.converters.base import RawSample
from tinyusfm_monai.data.converters.common import binary_mask, files_with_suffix, read_image, require_dir, safe_id

_FRAME = re.compile(r"^(?P<subject>\d+)_(?P<image>\d+)$")


def scan(src: Path) -> Iterator[RawSample]:
    train = require_dir(Path(src), "train")
    for image in files_with_suffix(train, (".tif", ".tiff")):
        match = _FRAME.match(image.stem)
        if not match:
            continue  # the masks themselves, and stray files
        mask = image.with_name(f"{image.stem}_mask{image.suffix}")
        yield RawSample(
            id=safe_id(image.stem),
            source=image,
            load_image=partial(read_image, image),
            load_mask=partial(binary_mask, mask),
            mask_source=mask,
            patient=match["subject"],
            issue=None if mask.is_file() else f"mask {mask.name} is missing",
        )
