"""One instance in, result objects on disk: the unit of work shared by the batch runner and the DICOM node.

Why shared: the CLI and the node must produce byte-for-byte the same kind of objects with the same UIDs, so a
study processed in batch and later re-sent by the PACS does not create a second result series.

Why streamed: frames are decoded, predicted and reduced one at a time (`UltrasoundImage.iter_frames`); what is
kept per frame is small (class probabilities, or the label regions of a cine frame), so a 900-frame cine costs
the memory of one frame. Overlays are written as their frame is predicted.

Why paths are checked: every output path is built from UIDs that come from the dataset, i.e. from whoever sent
it. A UID is digits and dots (`io.dicom.is_valid_uid`), and the final path must lie inside the output folder;
anything else is refused before a byte is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from tinyusfm_monai.bundle.predictor import Predictor, checked_prediction
from tinyusfm_monai.dicom import write
from tinyusfm_monai.dicom.corrections import resolve_correction
from tinyusfm_monai.io.dicom import (
    DEFAULT_LIMITS,
    INVALID_UID,
    DicomInputError,
    InputLimits,
    UltrasoundImage,
    check_identity,
    is_valid_uid,
    open_ultrasound,
)
from tinyusfm_monai.utils import atomic_path

SEG_TYPES = ("binary", "labelmap")


@dataclass
class InstanceResult:
    """What happened to one instance: the outputs written and a short, identifier-free summary."""

    sop_instance_uid: str
    study_instance_uid: str
    frame_numbers: list[int]
    outputs: list[Path] = field(default_factory=list)
    summary: str = ""
    crop: str = ""  # which ultrasound region was used, or why the full frame
    notes: list[str] = field(default_factory=list)


def save_atomically(ds: Dataset, path: Path) -> Path:
    """A crash never leaves half a DICOM file where a PACS or a rerun would find it."""
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def output_path(output_dir: str | os.PathLike, ds: Dataset, kind: str) -> Path:
    """OUTPUT/<StudyInstanceUID>/<KIND>_<SOPInstanceUID>.dcm: UIDs are deterministic, so reruns overwrite.

    Raises DicomInputError (invalid-uid) for a UID that is not digits and dots, and ValueError for a path that
    would still end outside `output_dir` (a study folder that is a symbolic link elsewhere)."""
    study, sop = str(ds.get("StudyInstanceUID", "")), str(ds.get("SOPInstanceUID", ""))
    for keyword, value in (("StudyInstanceUID", study), ("SOPInstanceUID", sop)):
        if not is_valid_uid(value):
            raise DicomInputError(
                "output", INVALID_UID, f"{keyword} is not a valid UID (digits and dots, at most 64 characters)"
            )
    if kind not in ("SEG", "SR", "SC"):
        raise ValueError(f"unknown output kind {kind!r}")
    root = Path(output_dir).resolve()
    path = root / study / f"{kind}_{sop}.dcm"
    if not path.resolve().is_relative_to(root):
        raise ValueError(f"refusing to write outside the output folder (study folder {study} leads elsewhere)")
    return path


def _summary(predictor: Predictor, results: list, frames: int) -> str:
    labels = predictor.task.labels
    if predictor.task.task_type == "classification":
        mean = np.mean(np.stack(results), axis=0)
        best = int(np.argmax(mean))
        return f"{labels[best]} (mean p={mean[best]:.3f} over {frames} frame(s))"
    present = set()
    for r in results:
        if isinstance(r, write.FrameRegions):
            present |= {labels[v + 1] for v, found in enumerate(r.present) if found}
        else:
            present |= {labels[v] for v in np.unique(r).tolist() if v}
    return ", ".join(sorted(present)) if present else "no finding"


def build_outputs(
    image: UltrasoundImage,
    results: list[np.ndarray],
    predictor: Predictor,
    secondary_capture: bool = False,
    seg_type: str = "binary",
) -> list[tuple[str, Dataset]]:
    """(kind, dataset) pairs for one instance from full-grid results of every selected frame (probabilities or
    label maps). `process_file` builds the same objects frame by frame; this is for callers holding all results.

    SEG or SR is decided by the SOP class (`image.is_multiframe`), the rule highdicom applies too."""
    out: list[tuple[str, Dataset]] = []
    out.append(_main_output(image, results, predictor, seg_type))
    if secondary_capture:
        for i in range(len(image.frame_numbers)):
            out.append(("SC", write.overlay_sc(image, i, results[i], predictor)))
    return out


def _main_output(image: UltrasoundImage, results: list, predictor: Predictor, seg_type: str) -> tuple[str, Dataset]:
    if predictor.task.task_type == "classification":
        return "SR", write.classification_sr(image, results, predictor)
    if not image.is_multiframe:
        return "SEG", write.segmentation_seg(image, results[0], predictor, seg_type=seg_type)
    if results and isinstance(results[0], write.FrameRegions):
        return "SR", write.segmentation_sr_from_regions(image, results, predictor)
    return "SR", write.segmentation_sr(image, results, predictor)


def process_file(
    predictor: Predictor,
    path: str | os.PathLike,
    output_dir: str | os.PathLike,
    frames: str | int = "all",
    secondary_capture: bool = False,
    seg_type: str = "binary",
    limits: InputLimits = DEFAULT_LIMITS,
) -> InstanceResult:
    """Read, predict, write. Raises DicomInputError for inputs to skip; anything else is a processing failure.

    Nothing is left behind for an instance that fails half way (overlays already written are removed)."""
    if seg_type not in SEG_TYPES:
        raise ValueError(f"seg_type must be one of {SEG_TYPES}")
    image = open_ultrasound(path, frames, limits)
    check_identity(path, image.dataset)
    segmentation = predictor.task.task_type == "segmentation"
    num_labels = len(predictor.task.labels)
    box = image.crop_box
    results: list = []
    overlays: list[Path] = []
    try:
        for i, frame in image.iter_frames():
            prediction = checked_prediction(predictor, image.cropped(i, frame))
            full = box.paste(prediction, image.rows, image.columns) if segmentation else prediction
            if segmentation and image.is_multiframe:
                results.append(write.frame_regions(prediction, num_labels, image.frame_numbers[i], (box.x0, box.y0)))
            else:
                results.append(full)
            if secondary_capture:
                sc = write.overlay_sc(image, i, full, predictor, frame=frame)
                overlays.append(save_atomically(sc, output_path(output_dir, sc, "SC")))
            del frame, full
        kind, ds = _main_output(image, results, predictor, seg_type)
        ds, target = resolve_correction(ds, output_path(output_dir, ds, kind))  # a changed source: new UID
        main = save_atomically(ds, target)
    except BaseException:
        for written in overlays:
            written.unlink(missing_ok=True)
        raise
    return InstanceResult(
        sop_instance_uid=str(image.dataset.SOPInstanceUID),
        study_instance_uid=str(image.dataset.StudyInstanceUID),
        frame_numbers=image.frame_numbers,
        outputs=[main, *overlays],
        summary=_summary(predictor, results, len(image.frame_numbers)),
        crop=image.crop_note,
        notes=list(image.notes),
    )
