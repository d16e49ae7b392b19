"""How an annotator marks the class of an image for a classification bundle, and reading it back.

MONAI Label's datastore keeps one label file per image in `labels/final/`; for segmentation it is a label map,
for classification MONAI Label defines nothing. Accepted here (first match wins):

* a label image (PNG/JPG/NRRD/NIfTI/...) in which the class is painted with value `class index + 1` anywhere
  (any stroke or blob; the maximum pixel value decides). Value 0 stays "unlabelled", so class 0 is still
  distinguishable from an empty label. This is what 3D Slicer's segment editor or a CVAT mask can produce.
* a `.json` file `{"label": "benign"}` or `{"label": 1}` (keys `label`, `class`, `class_name` or `class_index`;
  names are matched case-insensitively): convenient for scripts and the REST API.
* a `.txt` file holding the class name or the class index.

Where: the label tag `class` (`PUT /datastore/label?image=ID&tag=class`) is read first, then `final`. So one
datastore can hold both a segmentation mask (`final`) and a class (`class`) for the same image, and a datastore
used only for classification can keep the class in `final`, which is what MONAI Label clients save.

Kept free of monailabel imports so it can be unit-tested in the project's own environment.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CLASS_TAG = "class"
"""The datastore label tag read before `final` for classification bundles."""
CLASSIFICATION_LABEL_TAGS = (CLASS_TAG, "final")
NON_IMAGE_LABELS = (".json", ".txt")
"""Label files that carry a class, never a segmentation mask (segmentation trainers skip them)."""

_JSON_KEYS = ("label", "class", "class_name", "class_index")


def _class_from_value(value: object, class_names: Sequence[str], source: Path) -> int:
    names = [n.lower() for n in class_names]
    if isinstance(value, bool):
        raise ValueError(f"{source}: class must be a name or an index, got {value!r}")  # noqa: TRY004
    if isinstance(value, int):
        index = value
    else:
        text = str(value).strip()
        if text.lower() in names:
            return names.index(text.lower())
        if not text.lstrip("-").isdigit():
            raise ValueError(f"{source}: unknown class {text!r}; expected one of {list(class_names)} or an index")
        index = int(text)
    if not 0 <= index < len(class_names):
        raise ValueError(f"{source}: class index {index} outside 0..{len(class_names) - 1}")
    return index


def _max_pixel(path: Path) -> int:
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"):
        from PIL import Image

        with Image.open(path) as im:
            return int(np.asarray(im).max())
    from monai.transforms import LoadImage  # NRRD / NIfTI from 3D Slicer

    return int(np.asarray(LoadImage(image_only=True)(str(path))).max())


def class_from_label_file(path: str | Path, class_names: Sequence[str]) -> int | None:
    """The class index a label file marks, or None when it marks none (an all-zero label image)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            return _class_from_value(data, class_names, path)
        for key in _JSON_KEYS:
            if key in data:
                return _class_from_value(data[key], class_names, path)
        raise ValueError(f"{path}: none of the keys {_JSON_KEYS} found")
    if suffix == ".txt":
        return _class_from_value(path.read_text(), class_names, path)
    value = _max_pixel(path)
    if value == 0:
        return None
    return _class_from_value(value - 1, class_names, path)
