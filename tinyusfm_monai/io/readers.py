"""MONAI `ImageReader`s for every input the bundles take: ultrasound DICOM, PNG/JPG/BMP/TIFF, NIfTI/MetaImage/NRRD.

`UltrasoundImageReader` hands each file to exactly one reader, chosen by `formats.detect_format`. Why not
`LoadImaged(reader=[...])` with a list: MONAI tries a list last-to-first and catches every failure, so each
DICOM first went through PIL (with an "unable to load" log line per file), and vendor DICOM files whose
preamble holds a TIFF header (dual TIFF/DICOM, e.g. `US1_UNCR.dcm` in pydicom-data) were silently decoded *by
PIL*: no region crop, no frame selection, no DICOM metadata.

`UltrasoundDicomReader` reads one ultrasound instance (one selected frame) with `io.dicom`, so a bundle sees
exactly what the DICOM batch runner feeds the model (same decoding, same tissue crop), and its metadata carries
the crop box, the SOP/Study UIDs and the frame number, so any result can be mapped back to the source instance.

All readers return rows first (`reverse_indexing=False`), the layout of the whole pipeline and of the official
TinyUSFM code: PIL images, DICOM frames and ITK images (NIfTI's first axis is x, so ITK's rows-first array is the
image as viewers show it). Arrays are channel-last (`original_channel_dim` = -1).

Intensities: the pipeline after the reader expects 0..255 (8-bit) values. A 16-bit PNG read as is would be
clipped to white by that scale (68 % foreground instead of 12 % on the same image in 8 bits), so
`to_8bit_range` rescales every other bit depth by its real range (see there). Palette, bilevel and other
non-RGB PIL modes are converted to RGB as the official `PIL.convert("RGB")` does. Images smaller than
`MIN_IMAGE_SIDE` and 3D volumes are refused with an error that names them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader, ITKReader, PILReader
from monai.utils import ensure_tuple

from . import formats
from .dicom import (
    MIN_IMAGE_SIDE,
    DicomInputError,
    UltrasoundImage,
    check_ultrasound,
    parse_frame_policy,
    read_dataset,
    read_ultrasound,
)

#: PIL modes converted to RGB on reading (palette indices or CMYK values are not intensities)
_PIL_TO_RGB = ("P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La")
#: PIL modes holding 16-bit samples
_PIL_16_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


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
        return all(formats.is_dicom(f) or not Path(f).suffix for f in ensure_tuple(filename))

    def _policy(self) -> Callable[[int], list[int]]:
        if isinstance(self.frame, (int, np.integer)):
            index = int(self.frame)
            return lambda n: [min(max(index, 0), n - 1)]
        policy = parse_frame_policy(self.frame)
        return lambda n: policy(n)[:1]

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        images = []
        for f in ensure_tuple(data):
            if Path(f).is_dir():
                raise ValueError(
                    f"{f} is a folder: list its instances with tinyusfm_monai.io.readers.dicom_datalist(folder)"
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

    def _meta(self, image: UltrasoundImage, array: np.ndarray, box: Any) -> dict:
        ds = image.dataset
        full = [0, 0, image.columns, image.rows]
        spacing = (image.spacing.y_mm, image.spacing.x_mm) if image.spacing is not None else (1.0, 1.0)
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
            # no DICOM identity is needed to predict: a vendor file without a SOP Instance UID is still read
            "dicom_sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
            "dicom_sop_class_uid": str(ds.SOPClassUID),
            "dicom_series_instance_uid": str(ds.get("SeriesInstanceUID", "")),
            "dicom_study_instance_uid": str(ds.get("StudyInstanceUID", "")),
            # always two values, so a batch can mix calibrated and uncalibrated files; NaN = not calibrated
            "dicom_pixel_spacing_mm": list(spacing) if image.spacing is not None else [float("nan")] * 2,
            "dicom_rows_first": not self.reverse_indexing,
        }


class UltrasoundImageReader(ImageReader):
    """Dispatches each file to the DICOM, PIL or ITK reader; keyword arguments go to the DICOM reader."""

    def __init__(self, reverse_indexing: bool = False, **dicom_kwargs: Any):
        super().__init__()
        self.reverse_indexing = reverse_indexing
        self.dicom = UltrasoundDicomReader(reverse_indexing=reverse_indexing, **dicom_kwargs)
        self.pil = PILReader(reverse_indexing=reverse_indexing, converter=_pil_to_rgb)
        self._itk: ITKReader | None = None  # built on first use: importing ITK takes seconds

    def _itk_reader(self) -> ITKReader:
        if self._itk is None:
            self._itk = ITKReader(reverse_indexing=not self.reverse_indexing)
        return self._itk

    def reader_for(self, filename: str | os.PathLike) -> ImageReader:
        fmt = formats.detect_format(filename)
        if fmt == formats.DICOM:
            return self.dicom
        if fmt == formats.PIL:
            return self.pil
        return self._itk_reader()

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        return True

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        files = ensure_tuple(data)
        readers = [self.reader_for(f) for f in files]
        if any(r is not readers[0] for r in readers):
            raise ValueError(f"cannot stack images of different formats: {[Path(f).name for f in files]}")
        return readers[0], readers[0].read(data, **kwargs)

    def get_data(self, img: tuple[ImageReader, Any]) -> tuple[Any, dict]:
        reader, loaded = img
        data, meta = reader.get_data(loaded)
        if reader is not self.dicom:
            if reader is not self.pil:
                data, meta = _two_dimensional(data, meta)
            data = to_8bit_range(data, meta.get("mode"))
            _check_size(data, meta)
        for key in ("affine", "original_affine"):
            if key in meta:
                meta[key] = _homogeneous_4x4(meta[key])
        return data, meta


def _pil_to_rgb(image: Any) -> Any:
    return image.convert("RGB") if image.mode in _PIL_TO_RGB else image


def to_8bit_range(data: np.ndarray, mode: str | None = None) -> np.ndarray:
    """Values in 0..255, as the 8-bit rendering of the same image, whatever the bit depth.

    - uint8: unchanged; bool: 0 / 255.
    - 16-bit PIL modes (16-bit PNG/TIFF) and other unsigned integers (ITK uint16/uint32): divided by the
      type's range (65535 for 16 bits), the way viewers display them, so 16-bit = 257 x 8-bit gives the
      8-bit image exactly. Data that fits in 0..255 in an ITK file of a wider unsigned type is kept as is
      (8-bit data stored wide, common in MetaImage/NIfTI exports).
    - signed integers and floats: kept when already within 0..255; floats within 0..1 are multiplied by 255;
      anything else is stretched from its minimum to its maximum (no other range is known).
    Returned as float32 unless unchanged.
    """
    array = np.asarray(data)
    if array.dtype == np.uint8:
        return data
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if mode in _PIL_16_BIT:
        return (array.astype(np.float32) * np.float32(255.0 / 65535.0)).astype(np.float32)
    if array.size == 0:
        return array.astype(np.float32)
    lo, hi = float(array.min()), float(array.max())
    if np.issubdtype(array.dtype, np.unsignedinteger):
        if hi <= 255:
            return array.astype(np.float32)
        top = float(np.iinfo(array.dtype).max)
        return (array.astype(np.float32) * np.float32(255.0 / top)).astype(np.float32)
    if np.issubdtype(array.dtype, np.floating) and lo >= 0 and 0 < hi <= 1.0:
        return array.astype(np.float32) * np.float32(255.0)
    if lo >= 0 and hi <= 255:
        return array.astype(np.float32)
    if hi <= lo:
        return np.zeros(array.shape, np.float32)
    return ((array.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))).astype(np.float32)


def _two_dimensional(data: np.ndarray, meta: dict) -> tuple[np.ndarray, dict]:
    """An ITK image as 2D: a singleton third axis is dropped (2D NIfTI are often stored as W x H x 1); a real
    volume is refused with its size, since the models take 2D images."""
    channels = 0 if np.isnan(meta.get("original_channel_dim", np.nan)) else 1
    spatial = data.ndim - channels
    if spatial <= 2:
        return data, meta
    shape = tuple(data.shape[:spatial])
    singleton = [axis for axis in range(spatial) if shape[axis] == 1]
    if spatial == 3 and singleton:
        data = np.squeeze(data, axis=singleton[0])
        meta = dict(meta)
        meta["spatial_shape"] = np.asarray([s for s in np.asarray(meta["spatial_shape"]) if s != 1][:2])
        return data, meta
    raise ValueError(f"{spatial}D image of {' x '.join(map(str, shape))} voxels: only 2D images are supported")


def _check_size(data: np.ndarray, meta: dict) -> None:
    rows_cols = [int(s) for s in np.asarray(meta.get("spatial_shape", data.shape[:2]))[:2]]
    if min(rows_cols) < MIN_IMAGE_SIDE:
        raise ValueError(
            f"image of {' x '.join(map(str, rows_cols))} pixels, smaller than {MIN_IMAGE_SIDE} x {MIN_IMAGE_SIDE}"
        )


def _homogeneous_4x4(affine: Any) -> np.ndarray:
    """ITK gives 2D images a 3x3 affine, DICOM and PIL images get 4x4; one shape lets a batch mix formats."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape == (3, 3):
        out = np.eye(4)
        out[:2, :2], out[:2, 3] = affine[:2, :2], affine[:2, 2]
        return out
    return affine


def dicom_datalist(folder: str | os.PathLike, key: str = "image", check: str = "decode") -> list[dict[str, str]]:
    """[{key: path}] for every usable ultrasound instance under `folder` (sorted).

    For bundle configs: `"data": "$tinyusfm_monai.io.readers.dicom_datalist(@dataset_dir)"`. Non-ultrasound,
    undecodable and damaged files are left out (`tinyusfm-monai dicom infer` reports them with the reason), so
    one bad file cannot stop a bundle run. check="decode" decodes the middle frame of each file (catches
    truncated pixel data); check="header" only reads headers (faster, misses damaged pixel data).
    """
    if check not in ("decode", "header"):
        raise ValueError("check must be 'decode' or 'header'")
    items = []
    for path in formats.iter_files(folder):
        try:
            if check == "decode":
                read_ultrasound(path, "middle")
            else:
                check_ultrasound(path, read_dataset(path, pixels=False))
        except DicomInputError:
            continue
        items.append({key: str(path)})
    return items


def read_rgb(path: str | os.PathLike, frame: int = -1) -> np.ndarray:
    """One image as a channel-first uint8 RGB array (3, H, W), rows = image height (official orientation).

    2D files go through PIL `convert("RGB")` (as the official pipeline); DICOM through the ultrasound decoder,
    cropped to the tissue region of the Sequence of Ultrasound Regions: frame `frame` (0-based) of a cine, or
    the first frame when `frame` is -1.
    """
    if frame >= 0 or formats.is_dicom(path):
        index = max(frame, 0)
        array = read_ultrasound(path, lambda n: [min(index, n - 1)]).cropped(0)
    else:
        from PIL import Image

        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"))
    return np.ascontiguousarray(array.transpose(2, 0, 1))
