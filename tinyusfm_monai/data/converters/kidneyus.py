"""Open Kidney Ultrasound Data Set (Singla et al.): PNG images from the registration download plus the GitHub
repository's `labels/` folder, which holds the annotations.

    <download>/kidneyUS_images_14_june_2022/   1_IM-0001-0059_anon.png, 100_IM-0246-0030_anon.png, ...
    <repository clone>/labels/
      reviewed_labels_1.csv, reviewed_labels_2.csv     (VGG Image Annotator polygon exports)
      reviewed_masks_1/capsule/<image name>            (0/1, drawn from the CSV)
      reviewed_masks_1/regions/<image name>            (0..3: central echo complex, medulla, cortex; unused)

Put both under --src. Label decision: the kidney capsule of sonographer 1 (the publication benchmarks the
capsule; UltraBench also takes sonographer 1). Where `reviewed_masks_1/capsule/` is missing, the `Capsule`
polygons of `reviewed_labels_1.csv` are filled instead. The repository has 534 capsule masks; UniUS-Bench counts
487, presumably after dropping images with an empty capsule (reported here as warnings and kept) and the
duplicated frames the conversion report's duplicate check lists. That filter is not published.

Patient: the README says one image per patient, yet frames of one cine share the leading number (e.g.
`100_IM-0246-0030` and `100_IM-0246-0082`), so that number is used as the patient to keep them together.

Layout source: github.com/rsingla92/kidneyUS (labels/, README, src/annotation_analysis/create_masks.py) and
UltraSam's and UltraBench's kidneyUS converters (images from `kidneyUS_images_14_june_2022.zip`, masks paired by
file name).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterator
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from tinyusfm_monai.data.converters.base import RawSample, SampleError
from tinyusfm_monai.data.converters.common import (
    binary_mask,
    files_with_suffix,
    find_dirs,
    find_file,
    rasterise_polygons,
    read_image,
    safe_id,
)

SONOGRAPHER = 1
CAPSULE = "capsule"
Polygon = list[tuple[float, float]]


def _patient(stem: str) -> str | None:
    head = stem.split("_", 1)[0]
    return head if head.isdigit() and "_" in stem else None


@lru_cache(maxsize=2)
def _capsule_polygons(csv_path: Path) -> dict[str, list[Polygon]]:
    """Image name -> capsule outlines of one VIA export (other anatomy rows are ignored)."""
    polygons: dict[str, list[Polygon]] = defaultdict(list)
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            try:
                shape = json.loads(row.get("region_shape_attributes") or "{}")
                region = json.loads(row.get("region_attributes") or "{}")
            except json.JSONDecodeError:
                continue
            if str(region.get("Anatomy", "")).strip().lower() != CAPSULE:
                continue
            xs, ys = shape.get("all_points_x"), shape.get("all_points_y")
            if shape.get("name") in ("polygon", "polyline") and xs and ys and len(xs) == len(ys):
                polygons[row["filename"]].append(list(zip(xs, ys)))
    return dict(polygons)


def _mask_from_csv(csv_path: Path, image: Path) -> np.ndarray:
    outlines = _capsule_polygons(csv_path).get(image.name)
    if not outlines:
        raise SampleError(f"{csv_path}: no capsule outline for {image.name}")
    return rasterise_polygons(outlines, read_image(image).shape[:2], value=1)


def scan(src: Path) -> Iterator[RawSample]:
    src = Path(src)
    mask_dirs = [d / CAPSULE for d in find_dirs(src, f"reviewed_masks_{SONOGRAPHER}") if (d / CAPSULE).is_dir()]
    mask_dir = mask_dirs[0] if mask_dirs else None
    table = find_file(src, f"reviewed_labels_{SONOGRAPHER}.csv")
    if mask_dir is None and table is None:
        raise FileNotFoundError(
            f"neither labels/reviewed_masks_{SONOGRAPHER}/capsule/ nor labels/reviewed_labels_{SONOGRAPHER}.csv under "
            f"{src}; put the repository's labels/ folder next to the images"
        )
    # only the data set's own names (`<number>_...png`): a copied repository also holds a logo PNG
    images = [
        p
        for p in files_with_suffix(src, (".png",), recursive=True)
        if "reviewed_masks" not in p.as_posix() and _patient(p.stem) is not None
    ]
    for image in images:
        mask_png = mask_dir / image.name if mask_dir is not None else None
        if mask_png is not None and mask_png.is_file():
            load_mask, mask_source = partial(binary_mask, mask_png), mask_png
        else:
            load_mask = partial(_mask_from_csv, table, image) if table is not None else None
            mask_source = table
        yield RawSample(
            id=safe_id(image.stem),
            source=image,
            load_image=partial(read_image, image),
            load_mask=load_mask,
            mask_source=mask_source,
            patient=_patient(image.stem),
            issue=None if mask_source is not None else f"no capsule mask for {image.name} in {mask_dir}",
        )
