"""FETAL_PLANES_DB (Burgos-Artizzu et al., Sci Rep 2020) as Zenodo record 3904280 ships it.

    FETAL_PLANES_ZENODO/
      FETAL_PLANES_DB_data.csv      ';'-separated: Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train
      Images/Patient00001_Plane1_1_of_15.png ...

`Plane` is the 6-class label (Fetal abdomen / brain / femur / thorax, Maternal cervix, Other), `Patient_num`
groups images by patient and `Train` (1/0) is the publisher's patient-disjoint train/test split.

Layout source: the column list of the dataset's own README, as quoted by public projects using the Zenodo record.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from tinyusfm_monai.data.converters.base import RawSample
from tinyusfm_monai.data.raw_io import child, find_root, image_files, read_image, safe_id

CSV_NAME = "FETAL_PLANES_DB_data.csv"


def _is_root(d: Path) -> bool:
    return child(d, CSV_NAME) is not None


def read_rows(path: Path) -> list[dict[str, str]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    delimiter = ";" if text.split("\n", 1)[0].count(";") >= text.split("\n", 1)[0].count(",") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def scan(src: Path) -> Iterator[RawSample]:
    root = find_root(Path(src), _is_root, CSV_NAME)
    images_dir = child(root, "Images")
    images = {f.stem: f for f in image_files(images_dir)} if images_dir else {}
    for row in read_rows(child(root, CSV_NAME)):
        name = Path(row.get("Image_name", "")).stem
        if not name:
            continue
        path = images.get(name)
        train = row.get("Train", "")
        split = {"1": "training", "0": "test"}.get(train)
        issue = None
        if path is None:
            issue = f"listed in {CSV_NAME} but Images/{name}.png is missing"
        elif split is None:
            issue = f"Train column is {train!r}, expected 1 or 0"
        yield RawSample(
            id=safe_id(name),
            source=path or root / "Images" / f"{name}.png",
            load_image=partial(read_image, path or root / "Images" / f"{name}.png"),
            label=row.get("Plane", "").strip().lower() or None,
            patient=row.get("Patient_num") or None,
            split=split,
            issue=issue,
        )
