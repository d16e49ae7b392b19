"""DDTI thyroid nodules (Pedraza et al., SIPAIM 2015), in either of the two forms in circulation.

The 637-image form UniUS-Bench counts is the TN-SCUI 2020 winners' re-processing, redistributed inside the TN3K
download as `Thyroid Dataset/DDTI dataset/DDTI.zip`:

    DDTI/
      1_or_data/image/<n>.PNG, 1_or_data/mask/<n>.PNG, 1_or_data/category.csv   (masks 0/255; used)
      2_preprocessed_data/stage1/p_image/<n>.PNG, p_mask/<n>.PNG                (cropped copies; fallback)

Its images were renumbered (and the category file is explicitly fake), so there is no patient id: image-level
split. The publisher's original form is also read:

    <case>.xml    patient data; per image a <mark> with <image>k</image> and <svg>[{"points": [{"x":..,"y":..}]}]
    <case>_<k>.jpg

There the case number is the patient, and all outlines of an image are filled with 1. A few original XML files
end inside an outline; the points written before the cut are kept.

Layout source: the processed set's own README (TN-SCUI format, `image` and `mask` folders, renumbered),
WAMAWAMA/TNSCUI2020-Seg-Rank1st (`DDTI/1_or_data/image/<n>.PNG`), UltraSam's DDTI converter
(`2_preprocessed_data/stage1/p_image|p_mask`), and public parsers of the original XML (`<mark>`, `<svg>` JSON,
`<case>_<k>.jpg`; cases 197 and 205 truncated).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from tinyusfm_monai.data import raw_io
from tinyusfm_monai.data.converters.base import RawSample, SampleError
from tinyusfm_monai.data.converters.common import (
    binary_mask,
    files_with_suffix,
    find_dirs,
    rasterise_polygons,
    read_image,
    safe_id,
)

PAIRED_FOLDERS = (("image", "mask"), ("p_image", "p_mask"))  # (images, masks), preferred first
_CASE_IMAGE = re.compile(r"^(?P<case>\d+)_(?P<k>\d+)$")
_POINT = re.compile(r'"x"\s*:\s*(-?[\d.]+)\s*,\s*"y"\s*:\s*(-?[\d.]+)')
Polygon = list[tuple[float, float]]


def _paired_folders(src: Path) -> tuple[Path, Path] | None:
    for image_name, mask_name in PAIRED_FOLDERS:
        for image_dir in find_dirs(src, image_name):
            mask_dir = raw_io.child(image_dir.parent, mask_name)
            if mask_dir is not None and mask_dir.is_dir():
                return image_dir, mask_dir
    return None


def _scan_paired(image_dir: Path, mask_dir: Path) -> Iterator[RawSample]:
    masks = {p.stem.lower(): p for p in files_with_suffix(mask_dir)}
    for image in files_with_suffix(image_dir):
        mask = masks.get(image.stem.lower())
        yield RawSample(
            id=safe_id(image.stem),
            source=image,
            load_image=partial(read_image, image),
            load_mask=partial(binary_mask, mask) if mask else None,
            mask_source=mask,
            issue=None if mask else f"no mask named {image.stem}.* in {mask_dir}",
        )


def _outlines_from_svg(text: str) -> list[Polygon]:
    """Outlines from the `<svg>` JSON; when the JSON is cut short, the points written before the cut."""
    try:
        regions = json.loads(text)
        return [[(float(p["x"]), float(p["y"])) for p in region.get("points", [])] for region in regions]
    except (json.JSONDecodeError, TypeError, KeyError, AttributeError, ValueError):
        return [[(float(x), float(y)) for x, y in _POINT.findall(chunk)] for chunk in text.split('"points"')[1:]]


@lru_cache(maxsize=8)
def _outlines(xml_path: Path) -> dict[str, list[Polygon]]:
    """Image index -> nodule outlines, for one case file."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise SampleError(f"{xml_path}: cannot parse ({exc})") from exc
    outlines: dict[str, list[Polygon]] = {}
    for mark in root.iter("mark"):
        index, svg = (mark.findtext("image") or "").strip(), (mark.findtext("svg") or "").strip()
        if index and svg:
            outlines.setdefault(index, []).extend(p for p in _outlines_from_svg(svg) if p)
    return outlines


def _xml_mask(xml_path: Path, index: str, image: Path) -> np.ndarray:
    outlines = _outlines(xml_path).get(index)
    if not outlines:
        raise SampleError(f"{xml_path}: no nodule outline for image {index}")
    return rasterise_polygons(outlines, read_image(image).shape[:2], value=1)


def _scan_original(src: Path) -> Iterator[RawSample]:
    for image in files_with_suffix(src, (".jpg", ".jpeg", ".png"), recursive=True):
        match = _CASE_IMAGE.match(image.stem)
        if not match:
            continue
        case, index = match["case"], match["k"]
        xml_path = image.with_name(f"{case}.xml")
        yield RawSample(
            id=safe_id(case, index),
            source=image,
            load_image=partial(read_image, image),
            load_mask=partial(_xml_mask, xml_path, index, image),
            mask_source=xml_path,
            patient=case,
            issue=None if xml_path.is_file() else f"annotation file {xml_path.name} is missing",
        )


def scan(src: Path) -> Iterator[RawSample]:
    src = Path(src)
    paired = _paired_folders(src)
    if paired is not None:
        yield from _scan_paired(*paired)
    elif any(src.rglob("*.xml")):
        yield from _scan_original(src)
    else:
        raise FileNotFoundError(f"neither image/ + mask/ folders nor <case>.xml files under {src}")
