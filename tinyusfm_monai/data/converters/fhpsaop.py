"""FH-PS-AoP: the MICCAI 2023 Pubic Symphysis-Fetal Head Segmentation and Angle of Progression challenge's
training set (4,000 images, Zenodo).

    Pubic Symphysis-Fetal Head Segmentation and Angle of Progression/
      image_mha/  00001.mha, ...   (3 x 256 x 256: three identical grey planes)
      label_mha/  00001.mha, ...   (256 x 256: 0 background, 1 pubic symphysis, 2 fetal head)

Images are read with ITK and returned as one grey plane (as RGB if the planes ever differ); labels are already
the registry's values. The frames come from intrapartum videos without patient or video ids, so the split is
image-level and neighbouring frames of one video can land in different splits: treat test scores as optimistic
(the conversion report lists near-duplicate frames across splits).

Layout source: UltraSam's FH-PS-AOP converter (`image_mha/`, `label_mha/` with equal names, first plane of the
image), UltraBench's PSFHS reader (same layout), and the challenge README (3x256x256 images, labels 0/1/2).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np

from tinyusfm_monai.data import raw_io
from tinyusfm_monai.data.converters.base import RawSample, SampleError
from tinyusfm_monai.data.converters.common import as_uint8, files_with_suffix, read_itk, require_dir, safe_id

SUFFIXES = (".mha", ".mhd", ".nii.gz", ".nrrd")


def _channels_last(array: np.ndarray, path: Path) -> np.ndarray:
    """(H, W) when the planes are copies of one grey image, else (H, W, 3)."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] == 3 and (array == array[..., :1]).all():
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise SampleError(f"{path}: shape {array.shape} is not a 2D image")
    return np.array(array)


def _image(path: Path) -> np.ndarray:
    return as_uint8(_channels_last(read_itk(path), path), path)


def _label(path: Path) -> np.ndarray:
    label = _channels_last(read_itk(path), path)
    if label.ndim != 2:
        raise SampleError(f"{path}: label planes differ; expected one label map")
    return as_uint8(label, path)


def scan(src: Path) -> Iterator[RawSample]:
    src = Path(src)
    image_dir = require_dir(src, "image_mha")
    label_dir = raw_io.child(image_dir.parent, "label_mha") or require_dir(src, "label_mha")
    for image in files_with_suffix(image_dir, SUFFIXES):
        label = label_dir / image.name
        yield RawSample(
            id=safe_id(image.name.split(".")[0]),
            source=image,
            load_image=partial(_image, image),
            load_mask=partial(_label, label),
            mask_source=label,
            issue=None if label.is_file() else f"label {label.name} is missing from {label_dir}",
        )
