"""AUL, annotated ultrasound liver images (Xu et al., Brief Bioinform 2023), as Zenodo record 7272660 ships it.

    AUL/
      Benign/image/1.jpg ...      Benign/segmentation/{liver,mass,outline}/1.json
      Malignant/image/...         Malignant/segmentation/...
      Normal/image/...            Normal/segmentation/...

The class folder is the label (normal = no mass). Each image comes from a different patient, so the split
is image-level. File numbers repeat across class folders, so ids carry the class name.

Layout source: UltraBench's AUL processing script and its wiki (735 images, one per patient).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

from tinyusfm_monai.data.converters.base import RawSample
from tinyusfm_monai.data.raw_io import child, find_root, image_files, read_image, safe_id

CLASSES = ("normal", "benign", "malignant")


def _is_root(d: Path) -> bool:
    return any(child(d, c) is not None and child(child(d, c), "image") is not None for c in CLASSES)


def scan(src: Path) -> Iterator[RawSample]:
    root = find_root(Path(src), _is_root, "AUL class folders Benign/ Malignant/ Normal/ with image/ inside")
    for class_name in CLASSES:
        folder = child(root, class_name)
        image_dir = child(folder, "image") if folder is not None else None
        if image_dir is None:
            continue
        for f in image_files(image_dir):
            yield RawSample(
                id=safe_id(class_name, f.stem), source=f, load_image=partial(read_image, f), label=class_name
            )
