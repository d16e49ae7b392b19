"""CUBS, Carotid Ultrasound Boundary Study (Meiburger et al., UMB 2021 and CBM 2022), from Mendeley Data.

Two publisher layouts are read (the TinyUSFM table links the 2022 technical set; the registry's URL is the
2021 clinical set):

    CUBS 2021 (fpv535fss7)                       CUBS 2022 technical set (m7ndn58sv6)
      IMAGES/clin_0001_L.tiff ...                  images/tech_001.tiff, clin_0001_L.tiff ...
      CF/clin_0001_L_CF.txt  (mm per pixel)        CF/tech_001_CF.txt
      SEGMENTATIONS/Manual-A1/clin_0001_L-LI.txt   LIMA-Profiles/Manual-A1/tech_001-LI.txt, -MA.txt

Neither publication defines an image class, so the label is derived from the dataset's own expert annotation
(see the registry label_note): the far-wall intima-media thickness (mean LI-MA distance of analyst A1 times the
calibration factor) above 0.9 mm is "increased IMT", otherwise "normal IMT". `clin_0001_L` and `clin_0001_R` are
the two sides of one patient and share a patient id.

Layout source: public loaders of both Mendeley sets. Descriptions of the profile files differ (one "x y" pair
per line, or an x row and a y row), so both are read. How UniUS-Bench arrives at 1,378 images is not known.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np

from tinyusfm_monai.data.converters.base import RawSample
from tinyusfm_monai.data.raw_io import child, find_root, image_files, read_image, read_text_lines, safe_id

IMT_THRESHOLD_MM = 0.9  # ESH/ESC 2013 hypertension guideline: carotid IMT > 0.9 mm marks organ damage
PLAUSIBLE_IMT_MM = (0.1, 5.0)
ANALYST = "Manual-A1"
NORMAL, INCREASED = "normal IMT", "increased IMT"
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_SIDE = re.compile(r"^(?P<patient>.+)_[LR]$", re.IGNORECASE)


def _profiles_dir(root: Path) -> Path | None:
    return child(root, "SEGMENTATIONS") or child(root, "LIMA-Profiles")


def _is_root(d: Path) -> bool:
    return child(d, "CF") is not None and child(d, "images") is not None and _profiles_dir(d) is not None


def read_profile(path: Path) -> np.ndarray:
    """(N, 2) x, y points; the files hold either one 'x y' pair per line or an x row and a y row."""
    rows = [[float(v) for v in _NUMBER.findall(line)] for line in read_text_lines(path)]
    rows = [r for r in rows if r]
    if len(rows) == 2 and len(rows[0]) > 2 and len(rows[0]) == len(rows[1]):
        return np.stack([np.array(rows[0]), np.array(rows[1])], axis=1)
    points = np.array([r[:2] for r in rows if len(r) >= 2], dtype=np.float64)
    if len(points) < 2:
        raise ValueError(f"{path.name}: fewer than two boundary points")
    return points


def mean_imt_pixels(li: np.ndarray, ma: np.ndarray) -> float:
    """Mean vertical LI-MA distance over the x range both boundaries cover."""
    li, ma = li[np.argsort(li[:, 0])], ma[np.argsort(ma[:, 0])]
    start, stop = max(li[0, 0], ma[0, 0]), min(li[-1, 0], ma[-1, 0])
    if stop <= start:
        raise ValueError("LI and MA boundaries do not overlap in x")
    xs = np.linspace(start, stop, max(2, int(stop - start) + 1))
    return float(np.mean(np.abs(np.interp(xs, ma[:, 0], ma[:, 1]) - np.interp(xs, li[:, 0], li[:, 1]))))


def imt_label(image: Path, cf_dir: Path | None, analyst_dir: Path | None) -> tuple[str | None, str | None]:
    """(label, issue) for one image."""
    stem = image.stem
    cf_file = child(cf_dir, f"{stem}_CF.txt") if cf_dir else None
    li_file = child(analyst_dir, f"{stem}-LI.txt") if analyst_dir else None
    ma_file = child(analyst_dir, f"{stem}-MA.txt") if analyst_dir else None
    missing = [n for n, f in (("CF", cf_file), ("LI profile", li_file), ("MA profile", ma_file)) if f is None]
    if missing:
        return None, f"no {', '.join(missing)} file for {stem} ({ANALYST}); IMT label cannot be computed"
    try:
        cf = float(_NUMBER.findall(" ".join(read_text_lines(cf_file)))[0])
        imt = mean_imt_pixels(read_profile(li_file), read_profile(ma_file)) * cf
    except (ValueError, IndexError) as exc:
        return None, f"IMT label cannot be computed: {exc}"
    if not PLAUSIBLE_IMT_MM[0] <= imt <= PLAUSIBLE_IMT_MM[1]:
        return None, f"implausible IMT {imt:.2f} mm (CF {cf}); check CF units and profiles"
    return (INCREASED if imt > IMT_THRESHOLD_MM else NORMAL), None


def scan(src: Path) -> Iterator[RawSample]:
    what = "CUBS folders IMAGES/ (or images/), CF/ and SEGMENTATIONS/ (or LIMA-Profiles/)"
    root = find_root(Path(src), _is_root, what)
    profiles = _profiles_dir(root)
    analyst_dir = child(profiles, ANALYST)
    if analyst_dir is None:  # fall back to the first manual analyst the archive has
        manual = sorted(p for p in profiles.iterdir() if p.is_dir() and p.name.lower().startswith("manual"))
        analyst_dir = manual[0] if manual else None
    cf_dir = child(root, "CF")
    for f in image_files(child(root, "images")):
        label, issue = imt_label(f, cf_dir, analyst_dir)
        side = _SIDE.match(f.stem)
        yield RawSample(
            id=safe_id(f.stem),
            source=f,
            load_image=partial(read_image, f),
            label=label,
            patient=side.group("patient") if side else f.stem,
            issue=issue,
        )
