"""BUS-BRA (Gómez-Flores et al., Med Phys 2024) as its Zenodo record ships it.

    BUSBRA/
      Images/  bus_0001-l.png, bus_0001-r.png, ...      (1,875 images)
      Masks/   mask_0001-l.png, mask_0001-r.png, ...    (0/255)
      bus_data.csv     ID, Case, Histology, Pathology, BIRADS, Device, Width, Height, Side, BBOX
      5-fold-cv.csv, 10-fold-cv.csv

Masks are binarised to lesion = 1. Patient: the `Case` column of `bus_data.csv` (`bus_0001-l` and `bus_0001-r`
are one patient); without the CSV the case number in the file name gives the same grouping. The publisher's
5- and 10-fold tables are cross-validation folds, not one train/val/test split, so the patient-level rule applies.

Layout source: the publisher's MATLAB code in github.com/wgomezf/BUS-BRA (`Images/<ID>.png`,
`Masks/mask<ID minus "bus">.png`, `bus_data.csv` with ID/Width/Height, `<K>-fold-cv.csv` with kFold), UltraSam's
BUS-BRA converter, and public loaders using the `Case` column as patient id.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from tinyusfm_monai.data.converters.base import RawSample
from tinyusfm_monai.data.converters.common import (
    binary_mask,
    files_with_suffix,
    find_file,
    read_image,
    require_dir,
    safe_id,
)

_CASE_IN_NAME = re.compile(r"^bus_(?P<case>\d+)", re.IGNORECASE)
_PATIENT_COLUMNS = ("case", "patient", "patient_id", "patientid")


def _normalise(case: str) -> str:
    """`0001` and `1` are one patient whether they come from the CSV or from a file name."""
    case = (case or "").strip()
    return str(int(case)) if case.isdigit() else case


def _patients_from_csv(src: Path) -> dict[str, str]:
    table = find_file(src, "bus_data.csv")
    if table is None:
        return {}
    with open(table, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = {name.strip().lower(): name for name in reader.fieldnames or []}
        id_column = columns.get("id")
        patient_column = next((columns[c] for c in _PATIENT_COLUMNS if c in columns), None)
        if id_column is None or patient_column is None:
            return {}
        return {row[id_column].strip(): _normalise(row[patient_column]) for row in reader if row.get(id_column)}


def scan(src: Path) -> Iterator[RawSample]:
    src = Path(src)
    image_dir, mask_dir = require_dir(src, "Images"), require_dir(src, "Masks")
    patients = _patients_from_csv(src)
    for image in files_with_suffix(image_dir, (".png",)):
        in_name = _CASE_IN_NAME.match(image.stem)
        patient = patients.get(image.stem) or (_normalise(in_name["case"]) if in_name else None)
        mask = mask_dir / ("mask" + image.name[3:] if image.name.lower().startswith("bus") else image.name)
        yield RawSample(
            id=safe_id(image.stem),
            source=image,
            load_image=partial(read_image, image),
            load_mask=partial(binary_mask, mask),
            mask_source=mask,
            patient=patient,
            issue=None if mask.is_file() else f"mask {mask.name} is missing",
        )
