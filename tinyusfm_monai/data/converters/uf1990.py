"""UF1990, uterine fibroid ultrasound images (Xi & Wang, BMC Med Imaging 2024), Mendeley Data 552zbvzwrk.

The publication describes 1,990 images in two classes, uterine fibroid and non-uterine fibroid; the exact
folder names inside the Mendeley archive could not be confirmed here. Expected (most likely) layout:

    <archive folder>/
      Uterine Fibroid/*.jpg            (any image format; any nesting depth)
      Non-Uterine Fibroid/*.jpg
      [optionally inside train/ val/ test/ folders, used as the publisher's split when present]

So the class is read from the nearest ancestor folder whose name says fibroid / non-fibroid (also accepted:
normal / abnormal, no fibroid, non_fibroid, ...); a file under no such folder is reported, not guessed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from tinyusfm_monai.data.converters.base import RawSample
from tinyusfm_monai.data.raw_io import natural_key, read_image, safe_id
from tinyusfm_monai.io.formats import PIL, SUFFIXES

NEGATIVE = "non-fibroid"
POSITIVE = "fibroid"
SPLIT_FOLDERS = {
    "train": "training",
    "training": "training",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
    "testing": "test",
}


def class_of_folder(name: str) -> str | None:
    words = re.sub(r"[^a-z]+", " ", name.lower()).strip()
    squashed = words.replace(" ", "")
    if re.search(r"\b(non|no|without|normal|negative)\b", words) or squashed.startswith(("non", "nonuterine")):
        return NEGATIVE if ("fibroid" in squashed or words in ("normal", "negative")) else None
    if "fibroid" in squashed or words in ("abnormal", "positive", "uf"):
        return POSITIVE
    return None


def scan(src: Path) -> Iterator[RawSample]:
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src} does not exist")
    files = [
        p
        for p in src.rglob("*")
        if p.is_file() and p.suffix.lower() in SUFFIXES[PIL] and not any(x.startswith(".") for x in p.parts)
    ]
    for f in sorted(files, key=lambda p: natural_key(str(p.relative_to(src)))):
        parts = f.relative_to(src).with_suffix("").parts
        folders = parts[:-1]
        class_at = next((i for i in reversed(range(len(folders))) if class_of_folder(folders[i])), None)
        label = class_of_folder(folders[class_at]) if class_at is not None else None
        split_at = next((i for i in reversed(range(len(folders))) if folders[i].lower() in SPLIT_FOLDERS), None)
        split = SPLIT_FOLDERS[folders[split_at].lower()] if split_at is not None else None
        # ids start at the split or class folder, so they do not depend on how the archive was unpacked
        start = min(i for i in (class_at, split_at, len(folders)) if i is not None)
        yield RawSample(
            id=safe_id(*parts[start:]),
            source=f,
            load_image=partial(read_image, f),
            label=label,
            split=split,
            issue=None if label else "not under a folder naming a class (fibroid / non-fibroid)",
        )
