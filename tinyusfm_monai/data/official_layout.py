"""`tinyusfm-monai prepare_official TASK --src DIR --out DATA`: ready-made splits in the official folder layout.

The official TinyUSFM scripts have no split code: they read ready-made folders,

    classification: DIR/{train,val,test}/<class name>/*.png|jpg|jpeg
    segmentation:   DIR/{train,val,test}/img/<name> and DIR/{train,val,test}/label/<name> (same file name)

This turns such a folder into the bundles' datalist (`DATA/<task>/datalist.json`, train → training, val →
validation, test → test), so a bundle trains on exactly the split a user (or the maintainers) prepared. Images are
referenced where they are (the source is only read). Class folders are matched to the registry's class names
(case and `_`/`-`/space insensitive); the class index is the registry's. Binary masks in the official form (0/255,
read as > 127 as the official loader does) are written as 0/1 label maps under `DATA/<task>/masks/`; multi-class
masks must already hold the registry's values 0..C-1 and are referenced in place. Every file left out is named
with its cause in `DATA/<task>/conversion_report.json`; nothing is silently dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tinyusfm_monai.data.registry import TASKS, Task
from tinyusfm_monai.utils import atomic_write

OFFICIAL_SPLITS = {"train": "training", "val": "validation", "test": "test"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _norm(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _classification(task: Task, split_dir: Path, problems: list[dict[str, str]]) -> list[dict[str, Any]]:
    by_name = {_norm(n): i for i, n in enumerate(task.labels)}
    items = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        index = by_name.get(_norm(class_dir.name))
        if index is None:
            raise ValueError(
                f"{class_dir}: class folder {class_dir.name!r} is not a class of {task.name} "
                f"(registry classes: {list(task.labels)})"
            )
        items += [{"image": str(p), "label": index} for p in _images(class_dir)]
    return items


def _segmentation(
    task: Task, split_dir: Path, out: Path, split: str, problems: list[dict[str, str]]
) -> list[dict[str, Any]]:
    img_dir, label_dir = split_dir / "img", split_dir / "label"
    for d in (img_dir, label_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: missing (official segmentation layout: <split>/img and <split>/label)")
    items = []
    for image in _images(img_dir):
        label = label_dir / image.name
        if not label.is_file():
            problems.append({"file": str(image), "cause": f"no mask {label.name} in {label_dir}; left out"})
            continue
        try:
            mask = np.asarray(Image.open(label).convert("L"))
        except OSError as e:
            problems.append({"file": str(label), "cause": f"unreadable mask ({e}); left out"})
            continue
        if task.num_classes == 2:
            target = out / "masks" / split / (label.stem + ".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(((mask.astype(np.float32) / 255.0) > 0.5).astype(np.uint8)).save(target)
            items.append({"image": str(image), "label": str(target)})
            continue
        bad = sorted(set(np.unique(mask).tolist()) - set(range(task.num_classes)))
        if bad:
            cause = f"values {bad} outside 0..{task.num_classes - 1} of {task.name}; left out"
            problems.append({"file": str(label), "cause": cause})
            continue
        items.append({"image": str(image), "label": str(label)})
    return items


def prepare_official(task: str, src: str, out: str, overwrite: bool = False) -> str:
    """Write `OUT/<task>/datalist.json` from a folder in the official train/val/test layout; returns its path.

    Args:
        task: task (bundle) name, e.g. `busi_classification`.
        src: the folder holding `train/`, `val/`, `test/` (only read).
        out: output root (`--dataset_dir OUT/<task>` for the bundle).
        overwrite: replace an existing datalist of this task.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
    t = TASKS[task]
    src_dir, folder = Path(src).expanduser().resolve(), Path(out).expanduser().resolve() / task
    datalist = folder / "datalist.json"
    if datalist.exists() and not overwrite:
        raise FileExistsError(f"{datalist} exists; pass --overwrite to replace it")
    problems: list[dict[str, str]] = []
    content: dict[str, Any] = {
        "task": task,
        "split_rule": f"ready-made folders in the official layout: {src_dir}/{{train,val,test}}",
    }
    for official, split in OFFICIAL_SPLITS.items():
        split_dir = src_dir / official
        if not split_dir.is_dir():
            raise FileNotFoundError(f"{split_dir}: missing (the official layout has train/, val/ and test/)")
        if t.task_type == "classification":
            content[split] = _classification(t, split_dir, problems)
        else:
            content[split] = _segmentation(t, split_dir, folder, official, problems)
        if not content[split]:
            raise ValueError(f"{split_dir}: no usable images for {task}")
    folder.mkdir(parents=True, exist_ok=True)
    report = {"task": task, "source": str(src_dir), "left_out": problems}
    report["counts"] = {s: len(content[s]) for s in OFFICIAL_SPLITS.values()}
    atomic_write(folder / "conversion_report.json", json.dumps(report, indent=2) + "\n")
    atomic_write(datalist, json.dumps(content, indent=1) + "\n")
    for p in problems:
        print(f"left out {p['file']}: {p['cause']}")
    print(f"{task}: " + ", ".join(f"{s} {n}" for s, n in report["counts"].items()) + f" -> {datalist}")
    return str(datalist)
