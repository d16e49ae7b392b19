"""A MONAI `ImageReader` for ultrasound DICOM, so bundle configs can read a folder of DICOM files directly.

Use in a bundle's inference.json:

    "datalist": "$tinyusfm_monai.dicom.reader.dicom_datalist(@dataset_dir)",
    {"_target_": "LoadImaged", "keys": "image",
     "reader": "tinyusfm_monai.dicom.reader.UltrasoundDicomReader", "image_only": false},
    {"_target_": "EnsureChannelFirstd", "keys": "image"}

Why a reader and not a conversion step: the bundle then sees exactly what the DICOM batch runner feeds the
model (same decoding, same tissue crop) and its metadata carries the crop box, the SOP/Study UIDs and the
frame number, so any result can be mapped back to the source instance.

Array layout: (rows, columns, 3) uint8 RGB, channel-last (`original_channel_dim` = -1), i.e. the first spatial
axis is the image height. MONAI's PILReader defaults to the transpose (width first, `reverse_indexing=True`);
pass `reverse_indexing=True` here to match a model trained through PILReader.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from monai.data import ImageReader
from monai.utils import ensure_tuple

from tinyusfm_monai.dicom.read import DicomInputError, UltrasoundImage, check_ultrasound, iter_files, read_dataset
from tinyusfm_monai.dicom.read import read_ultrasound

DICOM_FILE_SUFFIXES = (".dcm", ".dicom", ".dic")
DICOM_SUFFIXES = DICOM_FILE_SUFFIXES + ("",)  # scanners and PACS often write DICOM files without a suffix


def looks_like_dicom(path: str | os.PathLike) -> bool:
    """DICOM files from scanners and PACS often have no suffix; the 'DICM' preamble marker tells."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


class UltrasoundDicomReader(ImageReader):
    """Reads one ultrasound DICOM instance (one selected frame) as a channel-last RGB image with source metadata.

    Args:
        frame: which frame of a multi-frame instance: "middle" (default), "first" or a 0-based index.
            Processing every frame of a cine is the job of `tinyusfm-monai dicom infer --frames all`.
        crop: crop to the largest 2D tissue region of the Sequence of Ultrasound Regions (default True).
        reverse_indexing: return (columns, rows, 3) like MONAI's PILReader default instead of (rows, columns, 3).
    """

    def __init__(self, frame: str | int = "middle", crop: bool = True, reverse_indexing: bool = False, **kwargs: Any):
        super().__init__()
        self.frame = frame
        self.crop = crop
        self.reverse_indexing = reverse_indexing
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        return all(
            Path(f).suffix.lower() in DICOM_SUFFIXES or looks_like_dicom(f) for f in ensure_tuple(filename)
        )

    def _policy(self):
        if isinstance(self.frame, (int, np.integer)):
            index = int(self.frame)
            return lambda n: [min(max(index, 0), n - 1)]
        from tinyusfm_monai.dicom.read import parse_frame_policy

        policy = parse_frame_policy(self.frame)
        return lambda n: policy(n)[:1]

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        images = []
        for f in ensure_tuple(data):
            if Path(f).is_dir():
                raise ValueError(
                    f"{f} is a folder: list its instances with tinyusfm_monai.dicom.reader.dicom_datalist(folder)"
                )
            images.append(read_ultrasound(f, self._policy()))
        return images if len(images) > 1 else images[0]

    def get_data(self, img: UltrasoundImage | list[UltrasoundImage]) -> tuple[np.ndarray, dict]:
        arrays, meta = [], {}
        for image in ensure_tuple(img):
            array = image.cropped(0) if self.crop else image.frames[0]
            box = image.crop_box if self.crop else None
            if self.reverse_indexing:
                array = np.moveaxis(array, 0, 1)
            arrays.append(array)
            if not meta:
                meta = self._meta(image, array, box)
        data = np.stack(arrays, axis=0) if len(arrays) > 1 else arrays[0]
        if len(arrays) > 1:
            meta["original_channel_dim"] = -1
        return data, meta

    def _meta(self, image: UltrasoundImage, array: np.ndarray, box) -> dict:
        ds = image.dataset
        full = [0, 0, image.columns, image.rows]
        spacing = (
            (image.spacing.y_mm, image.spacing.x_mm) if image.spacing is not None else (1.0, 1.0)
        )
        if self.reverse_indexing:
            spacing = spacing[::-1]
        affine = np.diag([spacing[0], spacing[1], 1.0, 1.0])
        return {
            "spatial_shape": np.asarray(array.shape[:2]),
            "original_channel_dim": -1,
            "affine": affine,
            "original_affine": affine.copy(),
            "dicom_crop_box": box.as_list() if box is not None else full,  # [x0, y0, x1, y1], ends exclusive
            "dicom_source_shape": [image.rows, image.columns],
            "dicom_frame_number": image.frame_numbers[0],  # 1-based, as in DICOM
            "dicom_number_of_frames": image.number_of_frames,
            "dicom_sop_instance_uid": str(ds.SOPInstanceUID),
            "dicom_sop_class_uid": str(ds.SOPClassUID),
            "dicom_series_instance_uid": str(ds.get("SeriesInstanceUID", "")),
            "dicom_study_instance_uid": str(ds.get("StudyInstanceUID", "")),
            # always two values, so a batch can mix calibrated and uncalibrated files; NaN = not calibrated
            "dicom_pixel_spacing_mm": list(spacing) if image.spacing is not None else [float("nan")] * 2,
            "dicom_rows_first": not self.reverse_indexing,
        }


def dicom_datalist(folder: str | os.PathLike, key: str = "image", check: str = "decode") -> list[dict[str, str]]:
    """[{key: path}] for every usable ultrasound instance under `folder` (sorted).

    For bundle configs: `"data": "$tinyusfm_monai.dicom.reader.dicom_datalist(@dataset_dir)"`. Non-ultrasound,
    undecodable and damaged files are left out (`tinyusfm-monai dicom infer` reports them with the reason), so
    one bad file cannot stop a bundle run. check="decode" decodes the middle frame of each file (catches
    truncated pixel data); check="header" only reads headers (faster, misses damaged pixel data).
    """
    if check not in ("decode", "header"):
        raise ValueError("check must be 'decode' or 'header'")
    items = []
    for path in iter_files(folder):
        try:
            if check == "decode":
                read_ultrasound(path, "middle")
            else:
                check_ultrasound(path, read_dataset(path, pixels=False))
        except DicomInputError:
            continue
        items.append({key: str(path)})
    return items
