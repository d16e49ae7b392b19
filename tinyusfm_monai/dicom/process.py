"""One instance in, result objects on disk: the unit of work shared by the batch runner and the DICOM node.

Why shared: the CLI and the node must produce byte-for-byte the same kind of objects with the same UIDs, so a
study processed in batch and later re-sent by the PACS does not create a second result series.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from tinyusfm_monai.bundle.predictor import Predictor, checked_prediction
from tinyusfm_monai.dicom import write
from tinyusfm_monai.io.dicom import UltrasoundImage, read_ultrasound
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


def save_atomically(ds: Dataset, path: Path) -> Path:
    """A crash never leaves half a DICOM file where a PACS or a rerun would find it."""
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def output_path(output_dir: str | os.PathLike, ds: Dataset, kind: str) -> Path:
    """OUTPUT/<StudyInstanceUID>/<KIND>_<SOPInstanceUID>.dcm: UIDs are deterministic, so reruns overwrite."""
    return Path(output_dir) / str(ds.StudyInstanceUID) / f"{kind}_{ds.SOPInstanceUID}.dcm"


def _summary(predictor: Predictor, results: list[np.ndarray]) -> str:
    labels = predictor.task.labels
    if predictor.task.task_type == "classification":
        mean = np.mean(np.stack(results), axis=0)
        best = int(np.argmax(mean))
        return f"{labels[best]} (mean p={mean[best]:.3f} over {len(results)} frame(s))"
    present = sorted({labels[v] for r in results for v in np.unique(r).tolist() if v})
    return ", ".join(present) if present else "no finding"


def build_outputs(
    image: UltrasoundImage,
    results: list[np.ndarray],
    predictor: Predictor,
    secondary_capture: bool = False,
    seg_type: str = "binary",
) -> list[tuple[str, Dataset]]:
    """(kind, dataset) pairs for one instance; `results` are per selected frame (probabilities or full-grid maps)."""
    out: list[tuple[str, Dataset]] = []
    if predictor.task.task_type == "classification":
        out.append(("SR", write.classification_sr(image, results, predictor)))
    elif image.number_of_frames == 1:
        out.append(("SEG", write.segmentation_seg(image, results[0], predictor, seg_type=seg_type)))
    else:
        out.append(("SR", write.segmentation_sr(image, results, predictor)))
    if secondary_capture:
        for i in range(len(image.frame_numbers)):
            out.append(("SC", write.overlay_sc(image, i, results[i], predictor)))
    return out


def process_file(
    predictor: Predictor,
    path: str | os.PathLike,
    output_dir: str | os.PathLike,
    frames: str | int = "all",
    secondary_capture: bool = False,
    seg_type: str = "binary",
) -> InstanceResult:
    """Read, predict, write. Raises DicomInputError for inputs to skip; anything else is a processing failure."""
    if seg_type not in SEG_TYPES:
        raise ValueError(f"seg_type must be one of {SEG_TYPES}")
    image = read_ultrasound(path, frames)
    results = []
    for i in range(len(image.frame_numbers)):
        prediction = checked_prediction(predictor, image.cropped(i))
        if predictor.task.task_type == "segmentation":
            prediction = image.crop_box.paste(prediction, image.rows, image.columns)
        results.append(prediction)
    written = []
    for kind, ds in build_outputs(image, results, predictor, secondary_capture, seg_type):
        written.append(save_atomically(ds, output_path(output_dir, ds, kind)))
    return InstanceResult(
        sop_instance_uid=str(image.dataset.SOPInstanceUID),
        study_instance_uid=str(image.dataset.StudyInstanceUID),
        frame_numbers=image.frame_numbers,
        outputs=written,
        summary=_summary(predictor, results),
    )
