"""GIST514-DB (He et al., Comput Biol Med): endoscopic-ultrasound JPEGs with COCO instance annotations, from the
Google Drive folder linked in the query2 repository.

    usd514_jpeg_roi/                 (ultrasound region cropped; used)
      images/       <name>.jpg
      annotations/  train_anno_crop_split_<k>.json, val_anno_crop_split_<k>.json   (k = 0..4)
    usd514_jpeg_raw/                 (full frames, if present; ignored while the ROI set exists)
      images/, annotations/train_anno_split_<k>.json, ...

Label decision: the annotations name two tumour types (`lmym` leiomyoma, `GIST`); the benchmark task is tumour
vs background, so every instance polygon is filled with 1. The train and val files of one split together list
every image; an image is read from the first file that lists it. An image in no file is reported.

Split: the publisher's five folds are cross-validation folds, not a train/val/test split, and there is no
patient id, so the image-level rule applies.

Layout source: github.com/howardchina/query2 configs (`data_root .../usd514_jpeg_roi`, `images/`,
`annotations/{train,val}_anno_crop_split_<k>.json`, classes `('lmym', 'GIST')`) and UltraSam's GIST514-DB
converter. Assumed, not confirmed: JPEG images directly in `images/`, polygon (not RLE) segmentations.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np

from tinyusfm_monai.data.converters.base import RawSample, SampleError
from tinyusfm_monai.data.converters.common import files_with_suffix, find_dirs, rasterise_polygons, read_image, safe_id

PREFERRED_VARIANT = "roi"  # the cropped frames, without the endoscope's user interface


def _dataset_root(src: Path) -> Path:
    roots = [d.parent for d in find_dirs(src, "annotations") if (d.parent / "images").is_dir()]
    if not roots:
        raise FileNotFoundError(f"no folder with images/ and annotations/ under {src}; is --src the GIST514-DB folder?")
    preferred = [r for r in roots if PREFERRED_VARIANT in r.name.lower()]
    return (preferred or roots)[0]


@lru_cache(maxsize=2)
def _index(annotation_dir: Path) -> dict[str, dict[str, Any]]:
    """file_name -> {height, width, segmentations, source json}, first annotation file wins."""
    index: dict[str, dict[str, Any]] = {}
    for json_path in files_with_suffix(annotation_dir, (".json",)):
        try:
            coco = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # an unreadable split file is reported through the images it leaves unannotated
        by_image: dict[Any, list[Any]] = {}
        for ann in coco.get("annotations", []):
            by_image.setdefault(ann.get("image_id"), []).append(ann.get("segmentation"))
        for image in coco.get("images", []):
            name = Path(str(image.get("file_name", ""))).name
            if name and name not in index:
                index[name] = {
                    "height": int(image.get("height", 0)),
                    "width": int(image.get("width", 0)),
                    "segmentations": by_image.get(image.get("id"), []),
                    "json": json_path,
                }
    return index


def _decode_uncompressed_rle(rle: dict[str, Any], shape: tuple[int, int]) -> np.ndarray:
    counts = rle["counts"]
    if not isinstance(counts, list):
        raise ValueError("compressed RLE")
    height, width = shape
    flat = np.zeros(height * width, np.uint8)
    position, value = 0, 0
    for run in counts:
        flat[position : position + int(run)] = value
        position += int(run)
        value = 1 - value
    return flat.reshape((width, height)).T  # COCO RLE runs down columns


def _mask(entry: dict[str, Any], image: Path) -> np.ndarray:
    height, width = entry["height"], entry["width"]
    if height <= 0 or width <= 0:
        height, width = read_image(image).shape[:2]
    mask = np.zeros((height, width), np.uint8)
    for segmentation in entry["segmentations"]:
        try:
            if isinstance(segmentation, dict):
                mask |= _decode_uncompressed_rle(segmentation, (height, width))
            else:
                polygons = [list(zip(flat[0::2], flat[1::2])) for flat in segmentation or []]
                mask = rasterise_polygons(polygons, (height, width), value=1, out=mask)
        except Exception as exc:
            raise SampleError(f"{entry['json']}: cannot decode the outline of {image.name} ({exc})") from exc
    return mask


def scan(src: Path) -> Iterator[RawSample]:
    root = _dataset_root(Path(src))
    annotation_dir = root / "annotations"
    index = _index(annotation_dir)
    for image in files_with_suffix(root / "images"):
        entry = index.get(image.name)
        yield RawSample(
            id=safe_id(image.stem),
            source=image,
            load_image=partial(read_image, image),
            load_mask=partial(_mask, entry, image) if entry else None,
            mask_source=entry["json"] if entry else None,
            issue=None if entry else f"{image.name} is in no annotation file of {annotation_dir}",
        )
