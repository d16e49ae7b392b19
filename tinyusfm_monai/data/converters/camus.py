"""CAMUS (Leclerc et al., IEEE TMI 2019), 2023 public release (NIfTI, humanheart-project.creatis.insa-lyon.fr):
every annotated frame of the apical two- and four-chamber half sequences.

    CAMUS_public/
      database_nifti/patient0001/
        patient0001_2CH_half_sequence.nii.gz, patient0001_2CH_half_sequence_gt.nii.gz   (frames ED..ES)
        patient0001_2CH_ED.nii.gz, _ED_gt, _ES, _ES_gt, Info_2CH.cfg, and the same for 4CH
      database_split/subgroup_training.txt, subgroup_validation.txt, subgroup_testing.txt   (patient names)

Labels are kept: 0 background, 1 LV endocardium (cavity), 2 LV myocardium, 3 left atrium. 500 patients x 2 views
x about 19 frames gives the 19,232 images UniUS-Bench counts, so the half sequences, not only ED/ES, are used;
ED and ES are their first and last frames, so the separate ED/ES files add nothing. A view without a half
sequence falls back to its ED/ES pair (the 2019 release's annotated frames; `.mhd` is read the same way).
The official split (`database_split/`) is used; patients it does not list are reported and left out.

Frames are taken in ITK's array order (frame, row, column), as SimpleITK-based readers (the public converters)
and MONAI's ITKReader index them: the transpose of nibabel's raw (x, y, t) array, no flip. Each sequence is
decoded once for all its frames.

Layout source: UltraSam's and UltraBench's CAMUS converters (`database_nifti/**/<patient>_<view>_half_sequence
(_gt).nii.gz`, `Info_<view>.cfg`) and public loaders of `database_split/subgroup_*.txt` (one patient per line).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np

from tinyusfm_monai.data import raw_io
from tinyusfm_monai.data.converters.base import RawSample, SampleError
from tinyusfm_monai.data.converters.common import as_uint8, find_dirs, itk_header_size, read_itk, safe_id

VIEWS = ("2CH", "4CH")
SUFFIXES = (".nii.gz", ".mhd", ".nii", ".mha")
SPLIT_FILES = {
    "training": "subgroup_training.txt",
    "validation": "subgroup_validation.txt",
    "test": "subgroup_testing.txt",
}
_PATIENT_DIR = re.compile(r"^patient\d+$", re.IGNORECASE)


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _official_split(src: Path) -> dict[str, str]:
    split: dict[str, str] = {}
    for folder in find_dirs(src, "database_split") or [src]:
        for name, file_name in SPLIT_FILES.items():
            path = folder / file_name
            if path.is_file():
                for patient in raw_io.read_text_lines(path):
                    split.setdefault(patient, name)
        if split:
            break
    return split


def _frame(path: Path, index: int | None) -> np.ndarray:
    volume = read_itk(path)
    if index is None:  # a single annotated frame, stored 2D or as a 1-frame volume
        frame = volume if volume.ndim == 2 else volume[0]
    else:
        if volume.ndim != 3 or index >= volume.shape[0]:
            raise SampleError(f"{path} has shape {volume.shape}; frame {index} does not exist")
        frame = volume[index]
    return as_uint8(frame, path)


def _frames_of_view(folder: Path, patient: str, view: str) -> Iterator[tuple[str, Path, Path, int | None]]:
    """(id, image file, gt file, frame index) for one view: the half sequence, else ED and ES."""
    sequence = _find(folder, f"{patient}_{view}_half_sequence")
    if sequence is not None:
        gt = _find(folder, f"{patient}_{view}_half_sequence_gt") or folder / f"{patient}_{view}_half_sequence_gt.nii.gz"
        try:
            shape = itk_header_size(sequence)
        except SampleError:
            # unreadable header: one sample whose loading reports the file, instead of a silent gap
            yield safe_id(patient, view, "half_sequence"), sequence, gt, None
            return
        count = shape[0] if len(shape) == 3 else 1
        for index in range(count):
            yield safe_id(patient, view, f"f{index + 1:02d}"), sequence, gt, index if len(shape) == 3 else None
        return
    for instant in ("ED", "ES"):
        image = _find(folder, f"{patient}_{view}_{instant}")
        if image is not None:
            gt = _find(folder, f"{patient}_{view}_{instant}_gt") or folder / f"{patient}_{view}_{instant}_gt.nii.gz"
            yield safe_id(patient, view, instant), image, gt, None


def scan(src: Path) -> Iterator[RawSample]:
    src = Path(src)
    roots = find_dirs(src, "database_nifti") or [src]
    patient_dirs = sorted(d for d in roots[0].iterdir() if d.is_dir() and _PATIENT_DIR.match(d.name))
    if not patient_dirs:
        raise FileNotFoundError(f"no patientNNNN folders under {roots[0]}; is --src the CAMUS_public folder?")
    split = _official_split(src)
    for folder in patient_dirs:
        patient = folder.name
        for view in VIEWS:
            for sample_id, image, gt, index in _frames_of_view(folder, patient, view):
                yield RawSample(
                    id=sample_id,
                    source=image,
                    load_image=partial(_frame, image, index),
                    load_mask=partial(_frame, gt, index),
                    mask_source=gt,
                    patient=patient,
                    split=split.get(patient),
                    issue=None if gt.is_file() else f"ground truth {gt.name} is missing",
                )
