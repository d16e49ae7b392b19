"""TN3K (Gong et al., ISBI 2021) as the TRFE-Net repository's download ships it.

    tn3k/
      trainval-image/0000.jpg ...     trainval-mask/0000.jpg ...   (2,879 images)
      test-image/0000.jpg ...         test-mask/0000.jpg ...       (614 images, the official test set)
      label4trainval.csv, label4test.csv                           ("0000.jpg,0"; 0 benign, 1 malignant)
      tn3k-trainval-fold0.json ... fold4.json                      ({"train": [...], "val": [...]})

Fold files index the trainval images in numeric file-name order (as the TRFE-Net loader sorts them); fold 0
is used as the official validation split. Masks are JPEG, so they are thresholded at 127, not tested for 255.

Layout source: the TRFE-Net loader (dataloaders/tn3k.py) and the TN3K page of openmedlab/Awesome-Medical-Dataset;
the label CSV format from public loaders of label4trainval.csv.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from tinyusfm_monai.data.converters.base import RawSample
from tinyusfm_monai.data.raw_io import (
    binary_mask,
    child,
    find_root,
    image_files,
    natural_key,
    read_image,
    read_text_lines,
    safe_id,
)

CLASS_OF_CODE = {0: "benign", 1: "malignant"}
PARTS = (("trainval", "training"), ("test", "test"))
FOLD_FILE = "tn3k-trainval-fold0.json"


def _is_root(d: Path) -> bool:
    return child(d, "trainval-image") is not None or child(d, "test-image") is not None


def read_labels(path: Path | None) -> dict[str, str]:
    """file stem -> class name; header lines and unparsable rows are skipped, not fatal."""
    labels: dict[str, str] = {}
    if path is None or not path.is_file():
        return labels
    for line in read_text_lines(path):
        parts = [p.strip() for p in line.replace(";", ",").split(",")]
        if len(parts) < 2:
            continue
        try:
            code = int(float(parts[-1]))
        except ValueError:
            continue
        if code in CLASS_OF_CODE:
            labels[Path(parts[0]).stem] = CLASS_OF_CODE[code]
    return labels


def _fold_splits(root: Path, names: list[str]) -> dict[str, str]:
    path = child(root, FOLD_FILE)
    if path is None:
        return {}
    fold = json.loads(path.read_text())
    result: dict[str, str] = {}
    for key, split in (("train", "training"), ("val", "validation")):
        for index in fold.get(key, []):
            if 0 <= int(index) < len(names):
                result[names[int(index)]] = split
    return result


def scan(src: Path) -> Iterator[RawSample]:
    root = find_root(Path(src), _is_root, "TN3K folders trainval-image/ and test-image/")
    for part, default_split in PARTS:
        image_dir, mask_dir = child(root, f"{part}-image"), child(root, f"{part}-mask")
        if image_dir is None:
            continue
        labels = read_labels(child(root, f"label4{part}.csv"))
        files = sorted(image_files(image_dir), key=lambda p: natural_key(p.name))
        folds = _fold_splits(root, [f.stem for f in files]) if part == "trainval" else {}
        masks = {m.stem: m for m in image_files(mask_dir)} if mask_dir is not None else {}
        for f in files:
            mask = masks.get(f.stem)
            yield RawSample(
                id=safe_id(part, f.stem),
                source=f,
                load_image=partial(read_image, f),
                label=labels.get(f.stem),
                load_mask=partial(binary_mask, mask) if mask is not None else None,
                mask_source=mask,
                split=folds.get(f.stem, default_split),
            )
