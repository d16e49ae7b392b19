"""Where a bundle's images come from: a prepared dataset, a folder of images, or the embedded phantom.

Bundles call these with `@dataset_dir`. An empty `dataset_dir` means "the embedded phantom version of
this task", generated on first use into a cache, so `python -m monai.bundle run --config_file
bundles/<task>/configs/train.json` works on a fresh machine with no data from outside.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from monai.data import load_decathlon_datalist

from tinyusfm_monai.io import formats

logger = logging.getLogger(__name__)

SPLITS = ("training", "validation", "test")
DATALIST_NAME = "datalist.json"


def _phantom_datalist(task: str) -> Path:
    from .phantom import ensure_phantom

    logger.warning("no dataset_dir given: using the embedded ultrasound phantom version of %s", task)
    return Path(ensure_phantom(task))


def resolve_datalist(task: str, dataset_dir: str | None) -> Path:
    """The datalist JSON for a task: `<dataset_dir>/datalist.json`, a JSON file itself, or the phantom's."""
    if not dataset_dir:
        return _phantom_datalist(task)
    path = Path(dataset_dir).expanduser()
    if path.is_file() and path.suffix == ".json":
        return path
    for candidate in (path / DATALIST_NAME, path / task / DATALIST_NAME):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{path}: no {DATALIST_NAME} found; run `tinyusfm-monai prepare <dataset> --src RAW --out DIR` and pass "
        f"--dataset_dir DIR/{task}, or leave dataset_dir empty to use the embedded phantom"
    )


def task_datalist(task: str, dataset_dir: str | None, split: str) -> list[dict[str, Any]]:
    """One split of a task's datalist, paths made absolute (MONAI `load_decathlon_datalist`)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = resolve_datalist(task, dataset_dir)
    with open(path) as f:
        content = json.load(f)
    if split not in content or not content[split]:
        raise ValueError(f"{path}: the {split!r} list is missing or empty")
    is_seg = task.endswith("_segmentation")
    return load_decathlon_datalist(str(path), is_segmentation=is_seg, data_list_key=split)


def inference_datalist(task: str, dataset_dir: str | None) -> list[dict[str, Any]]:
    """Images to predict: a folder of images, a datalist's test split, or the phantom's test split."""
    if dataset_dir:
        path = Path(dataset_dir).expanduser()
        if path.is_dir() and not (path / DATALIST_NAME).is_file():
            items = [{"image": str(p)} for p in _folder_images(path)]
            if not items:
                raise FileNotFoundError(
                    f"{path}: no images found (looked for {', '.join(formats.ALL_SUFFIXES)} and DICOM by content)"
                )
            return items
        if path.is_file() and path.suffix != ".json":
            return [{"image": str(path)}]
    return [{"image": d["image"]} for d in task_datalist(task, dataset_dir, "test")]


def inference_root(dataset_dir: str | None) -> str:
    """`SaveImaged` `data_root_dir` for inference: the input folder, so that predictions keep their sub-folder
    (`case1/IM0001` and `case2/IM0001` do not collide); empty for a single file, a datalist or the phantom, whose
    inputs may lie anywhere (a relative path from them could leave `output_dir`)."""
    if not dataset_dir:
        return ""
    path = Path(dataset_dir).expanduser()
    return str(path) if path.is_dir() and not (path / DATALIST_NAME).is_file() else ""


def _folder_images(folder: Path) -> list[Path]:
    """The images of a folder; everything left out is logged by file name with the reason (never silently:
    a `.raw` next to its `.mhd`, a FIFO, a symlink loop or a text file is named, then the rest is read)."""
    images = []
    for entry in formats.iter_entries(folder):
        if entry.problem:
            logger.warning("left out %s: %s", entry.path.name, entry.problem)
        elif formats.detect_format(entry.path) is None:
            logger.warning(
                "left out %s: not an image format read here (%s, or DICOM by content)",
                entry.path.name,
                ", ".join(formats.ALL_SUFFIXES),
            )
        else:
            images.append(entry.path)
    return images
