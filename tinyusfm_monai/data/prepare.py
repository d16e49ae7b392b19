"""`tinyusfm-monai prepare <dataset> --src RAW --out DIR`: a publisher's download in, MONAI datalists out.

The converter module of the dataset only knows the publisher's layout (`scan`); everything that must be the
same for all 17 datasets lives here once: label and mask checks against the task registry, PNG writing,
reproducible splits, the leakage check, the per-file report. Output per task of the dataset:

    OUT/<task>/images/<id>.png          uint8, grey or RGB as the source is
    OUT/<task>/masks/<id>.png           uint8 label map with the registry's values (segmentation)
    OUT/<task>/datalist.json            training / validation / test lists for load_decathlon_datalist
    OUT/<task>/conversion_report.json   every file left out or kept with a warning, and why

Existing output is never overwritten silently: `prepare` refuses unless `overwrite=True`, which first removes
the task folders it made before (and only folders that look like its own output).
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from tinyusfm_monai.data.conversion_report import ERROR, WARNING, TaskReport
from tinyusfm_monai.data.converters.base import RawSample, SampleError
from tinyusfm_monai.data.leakage import Fingerprint, find_cross_split_duplicates, fingerprint
from tinyusfm_monai.data.registry import Task, get_dataset, tasks_of
from tinyusfm_monai.data.splits import (
    SPLITS,
    Item,
    assign_splits,
    maintainer_reading_split,
    read_split_file,
    split_file_path,
    write_split_file,
)

SPLIT_RULES = ("ours", "maintainer-reading")
DEFAULT_SEED = 20251022  # fixed once for the project; changing it changes every computed split
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_OUR_FILES = ("datalist.json", "conversion_report.json")


def default_splits_dir() -> Path | None:
    """`datasets/` of a source checkout (where split files are committed); None for an installed wheel."""
    candidate = Path(__file__).resolve().parents[2] / "datasets"
    return candidate if candidate.is_dir() else None


def prepare(
    dataset: str,
    src: str,
    out: str,
    seed: int = DEFAULT_SEED,
    overwrite: bool = False,
    write_splits: bool = False,
    splits_dir: str | None = None,
    progress: bool = True,
    split_file: str | None = None,
    split_rule: str = "ours",
) -> dict:
    """Convert one dataset into the canonical layout of each of its registry tasks.

    Args:
        dataset: registry key (`cubs`, `busi`, ...).
        src: the folder the user unpacked the publisher's download into; it is only read.
        out: output root; one sub-folder per task is created.
        seed: key of the split order (only used where no official split and no committed split file exist).
        overwrite: replace this dataset's task folders under `out` (and, with `write_splits`, its split files).
        write_splits: write the splits used to `<splits_dir>/<dataset>/splits/<task>.json`.
        splits_dir: where committed split files live; default `datasets/` of the source checkout.
        progress: show a progress bar.
        split_file: your own split lists (JSON with "training", "validation", "test" lists of sample ids, the
            format `write_split_file` writes); it wins over every rule, as a committed split file does.
        split_rule: where neither a split list nor the publisher gives a split: "ours" (the hash rule above) or
            "maintainer-reading" (`splits.maintainer_reading_split`: our reading of the TinyUSFM maintainer's
            "stratified random split of 7:1:2, seed 1234"; labelled as such in the report, never the paper's split).

    Returns:
        per task: number converted, per split, number of issues.
    """
    ds = get_dataset(dataset)
    tasks = tasks_of(dataset)
    src_dir, out_dir = Path(src).expanduser().resolve(), Path(out).expanduser().resolve()
    if not src_dir.is_dir():
        raise FileNotFoundError(f"source folder {src_dir} does not exist")
    if out_dir == src_dir or src_dir in out_dir.parents:
        raise ValueError(f"output {out_dir} lies inside the source {src_dir}; the source folder is never modified")
    split_root = Path(splits_dir).expanduser().resolve() if splits_dir else default_splits_dir()
    if write_splits and split_root is None:
        raise ValueError("write_splits needs splits_dir (no datasets/ folder of a source checkout was found)")
    _claim_output(out_dir, tasks, overwrite)

    converter = importlib.import_module(f"tinyusfm_monai.data.converters.{ds.key}")
    samples = list(converter.scan(src_dir))
    if not samples:
        raise FileNotFoundError(
            f"no {ds.key} samples found under {src_dir}; see datasets/{ds.key}/README.md for the expected layout"
        )

    reports = {t.name: TaskReport(task=t.name, dataset=ds.key, found=len(samples)) for t in tasks}
    valid = _screen_samples(samples, reports)
    if split_rule not in SPLIT_RULES:
        raise ValueError(f"split_rule must be one of {SPLIT_RULES}, got {split_rule!r}")
    user_split = Path(split_file).expanduser().resolve() if split_file else None
    if user_split is not None and not user_split.is_file():
        raise FileNotFoundError(f"split list {user_split} does not exist")
    assignments = _choose_splits(
        ds.key, tasks, valid, seed, reports, split_root, write_splits, overwrite, user_split, split_rule
    )
    fingerprints = _convert(valid, tasks, assignments, reports, out_dir, progress)

    for task in tasks:
        report = reports[task.name]
        report.leakage = find_cross_split_duplicates({i: fingerprints[i] for i in report.converted}, report.converted)
        _write_datalist(out_dir / task.name, task, ds.key, report)
        report.write(out_dir / task.name / "conversion_report.json")
        if write_splits and split_root is not None:
            path = split_file_path(split_root, ds.key, task.name)
            if not path.exists() or overwrite:
                write_split_file(path, ds.key, task.name, report.converted, report.split_rule)
                report.split_file.setdefault("written", str(path))
                report.write(out_dir / task.name / "conversion_report.json")
        print(report.render())
    return {name: r.summary_line() for name, r in reports.items()}


# ---- steps ----------------------------------------------------------------------------------------------


def _claim_output(out_dir: Path, tasks: list[Task], overwrite: bool) -> None:
    for task in tasks:
        folder = out_dir / task.name
        if not folder.exists() or not any(folder.iterdir()):
            continue
        if not overwrite:
            raise FileExistsError(f"{folder} already exists and is not empty; pass --overwrite to replace it")
        if not any((folder / f).exists() for f in _OUR_FILES):
            raise FileExistsError(f"{folder} is not empty and does not look like prepare output; not deleting it")
        shutil.rmtree(folder)


def _screen_samples(samples: list[RawSample], reports: dict[str, TaskReport]) -> list[RawSample]:
    """Drop samples that no task can use (scan problems, bad or duplicate ids), reporting each."""
    seen: set[str] = set()
    valid: list[RawSample] = []
    for s in samples:
        cause = None
        if s.issue:
            cause = s.issue
        elif not _ID_PATTERN.match(s.id or ""):
            cause = f"converter produced an unsafe id {s.id!r}"
        elif s.id in seen:
            cause = f"duplicate id {s.id!r} (first occurrence kept)"
        if cause:
            for r in reports.values():
                r.add(ERROR, s.id or "?", s.source, cause)
            continue
        seen.add(s.id)
        valid.append(s)
    return valid


def _choose_splits(
    key: str,
    tasks: list[Task],
    samples: list[RawSample],
    seed: int,
    reports: dict[str, TaskReport],
    split_root: Path | None,
    write_splits: bool,
    overwrite: bool,
    user_split: Path | None = None,
    split_rule: str = "ours",
) -> dict[str, dict[str, str]]:
    """Per task: id -> split. The user's split list, then a committed split file win over the rule, so every user
    gets the same split."""
    classification = next((t for t in tasks if t.task_type == "classification"), None)
    has_official = any(s.split for s in samples)
    items = []
    for s in samples:
        if has_official and s.split not in SPLITS:
            for r in reports.values():
                r.add(ERROR, s.id, s.source, "not in the publisher's official split; left out")
            continue
        stratum = s.label if classification and s.label in classification.labels else None
        items.append(Item(id=s.id, group=s.patient or s.id, stratum=stratum, official=s.split))
    if split_rule == "maintainer-reading" and not has_official:
        computed, rule = maintainer_reading_split(items)
    else:
        computed, rule = assign_splits(items, seed)

    result: dict[str, dict[str, str]] = {}
    for task in tasks:
        report = reports[task.name]
        path = split_file_path(split_root, key, task.name) if split_root else None
        if user_split is not None:
            path = user_split
        if path is not None and path.exists() and (user_split is not None or not (write_splits and overwrite)):
            committed, report.split_rule = read_split_file(path)
            in_data = set(computed)
            report.split_file = {
                "path": str(path),
                "missing_from_file": sorted(in_data - set(committed)),
                "missing_from_data": sorted(set(committed) - in_data),
            }
            for sample_id in report.split_file["missing_from_file"]:
                report.add(ERROR, sample_id, "", f"not listed in the committed split file {path.name}; left out")
            result[task.name] = {i: committed[i] for i in in_data & set(committed)}
        else:
            report.split_rule = rule
            result[task.name] = dict(computed)
    return result


def _convert(
    samples: list[RawSample],
    tasks: list[Task],
    assignments: dict[str, dict[str, str]],
    reports: dict[str, TaskReport],
    out_dir: Path,
    progress: bool,
) -> dict[str, Fingerprint]:
    from tqdm.auto import tqdm

    for task in tasks:
        (out_dir / task.name / "images").mkdir(parents=True, exist_ok=True)
        if task.task_type == "segmentation":
            (out_dir / task.name / "masks").mkdir(parents=True, exist_ok=True)

    fingerprints: dict[str, Fingerprint] = {}
    bar = tqdm(samples, desc=f"prepare {reports[tasks[0].name].dataset}", unit="img", disable=not progress)
    for sample in bar:
        wanted = [t for t in tasks if sample.id in assignments[t.name]]
        if not wanted:
            continue
        try:
            image = _checked_image(sample.load_image())
        except Exception as exc:  # noqa: BLE001 - any per-file failure is reported, the conversion goes on
            for t in wanted:
                reports[t.name].add(ERROR, sample.id, sample.source, _cause(exc))
            continue
        mask_cache: list = []
        for task in wanted:
            report = reports[task.name]
            if task.task_type == "classification":
                if sample.label is None:
                    report.add(ERROR, sample.id, sample.source, "no class label")
                    continue
                if sample.label not in task.labels:
                    report.add(ERROR, sample.id, sample.source, f"unknown class {sample.label!r}")
                    continue
                target: object = task.labels.index(sample.label)
            else:
                mask = _task_mask(sample, image, task, report, mask_cache)
                if mask is None:
                    continue
                _save_png(mask, out_dir / task.name / "masks" / f"{sample.id}.png")
                target = f"masks/{sample.id}.png"
            _save_png(image, out_dir / task.name / "images" / f"{sample.id}.png")
            split = assignments[task.name][sample.id]
            report.converted[sample.id] = split
            label_name = sample.label if task.task_type == "classification" else "all"
            report.class_counts.setdefault(split, {}).setdefault(label_name, 0)
            report.class_counts[split][label_name] += 1
            report.targets[sample.id] = target
        fingerprints[sample.id] = fingerprint(image)
    return fingerprints


def _task_mask(sample: RawSample, image: np.ndarray, task: Task, report: TaskReport, cache: list):
    mask_file = sample.mask_source or sample.source
    if sample.load_mask is None:
        report.add(ERROR, sample.id, mask_file, "no mask")
        return None
    try:
        if not cache:
            cache.append(np.asarray(sample.load_mask()))
        mask = cache[0]
    except Exception as exc:  # noqa: BLE001
        report.add(ERROR, sample.id, mask_file, _cause(exc))
        return None
    if mask.ndim != 2:
        report.add(ERROR, sample.id, mask_file, f"mask is not a 2-D label map (shape {mask.shape})")
        return None
    if mask.shape != image.shape[:2]:
        report.add(
            ERROR, sample.id, mask_file, f"image/mask size mismatch (image {image.shape[:2]}, mask {mask.shape})"
        )
        return None
    values = np.unique(mask)
    outside = [int(v) for v in values if not (0 <= v < task.num_classes)]
    if outside:
        report.add(
            ERROR, sample.id, mask_file, f"mask values {outside} outside the registry labels 0..{task.num_classes - 1}"
        )
        return None
    if not values.any():
        report.add(WARNING, sample.id, mask_file, "empty mask (kept)")
    return mask.astype(np.uint8)


def _checked_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise SampleError(f"converter returned {image.dtype} pixels, expected uint8")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3) or min(image.shape[:2]) < 1:
        raise SampleError(f"unsupported image shape {image.shape}")
    return image


def _cause(exc: Exception) -> str:
    return str(exc) if isinstance(exc, SampleError) else f"{type(exc).__name__}: {exc}"


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(np.ascontiguousarray(array)).save(path, compress_level=3)


def _write_datalist(folder: Path, task: Task, key: str, report: TaskReport) -> None:
    targets = report.targets
    ds = get_dataset(key)
    payload: dict = {
        "name": task.name,
        "description": f"{ds.title}; converted by tinyusfm-monai prepare",
        "reference": ds.citation,
        "licence": ds.licence,
        "tensorImageSize": "2D",
        "task_type": task.task_type,
        "labels": {str(i): name for i, name in enumerate(task.labels)},
        "split_rule": report.split_rule,
    }
    for split in SPLITS:
        ids = sorted(i for i, s in report.converted.items() if s == split)
        payload[split] = [{"id": i, "image": f"images/{i}.png", "label": targets[i]} for i in ids]
    payload["numTraining"] = len(payload["training"])
    payload["numTest"] = len(payload["test"])
    (folder / "datalist.json").write_text(json.dumps(payload, indent=1) + "\n")
