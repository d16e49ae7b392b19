"""What each operator of the MONAI Deploy app does, without the SDK: the same functions the node and the batch
use, split where the SDK's operators split (selection -> prediction -> writing), so the app's objects and UIDs
are those of `dicom infer` and `dicom serve` for the same bundle.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from tinyusfm_monai.bundle.predictor import Predictor, checked_prediction
from tinyusfm_monai.dicom import write
from tinyusfm_monai.dicom.process import build_outputs, output_path, save_atomically
from tinyusfm_monai.io.dicom import (
    DEFAULT_LIMITS,
    DicomInputError,
    InputLimits,
    UltrasoundImage,
    check_identity,
    check_limits,
    check_ultrasound,
    open_ultrasound,
    read_dataset,
)

log = logging.getLogger("tinyusfm_monai.monaideploy")


@dataclass
class Selection:
    """The ultrasound instances of a folder, and every other file with the reason it was left out."""

    instances: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def select_ultrasound(folder: str | os.PathLike, limits: InputLimits = DEFAULT_LIMITS) -> Selection:
    """Ultrasound instances under `folder` (judged by their headers: SOP class, Modality, UIDs, limits), in
    name order; the SDK's series selector works on series rules, ours on the same checks as the node's."""
    selection = Selection()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith(".")):
        try:
            ds = read_dataset(path, pixels=False)
            check_ultrasound(path, ds)
            check_limits(path, ds, limits, path.stat().st_size)
            check_identity(path, ds)
        except DicomInputError as exc:
            selection.skipped[str(path)] = f"{exc.reason}: {exc.detail}"
            continue
        except Exception as exc:  # not DICOM at all, or a header that cannot be read
            selection.skipped[str(path)] = f"unreadable: {type(exc).__name__}"
            continue
        selection.instances.append(path)
    return selection


def predict_instance(
    predictor: Predictor, path: Path, frames: str | int = "all", limits: InputLimits = DEFAULT_LIMITS
) -> tuple[UltrasoundImage, list]:
    """Full-grid predictions for the selected frames (cine segmentation kept as label regions, as the node does)."""
    image = open_ultrasound(path, frames, limits)
    segmentation = predictor.task.task_type == "segmentation"
    box = image.crop_box
    results: list = []
    for i, frame in image.iter_frames():
        prediction = checked_prediction(predictor, image.cropped(i, frame))
        if segmentation and image.is_multiframe:
            results.append(
                write.frame_regions(prediction, len(predictor.task.labels), image.frame_numbers[i], (box.x0, box.y0))
            )
        elif segmentation:
            results.append(box.paste(prediction, image.rows, image.columns))
        else:
            results.append(prediction)
    return image, results


def write_results(
    image: UltrasoundImage, results: list, predictor: Predictor, output: str | os.PathLike, seg_type: str = "binary"
) -> list[Path]:
    """DICOM SEG (single frame) or SR (cine, classification) under OUTPUT/<StudyInstanceUID>/."""
    written = []
    for kind, ds in build_outputs(image, results, predictor, seg_type=seg_type):
        written.append(save_atomically(ds, output_path(output, ds, kind)))
    return written
