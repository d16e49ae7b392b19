"""One MONAI `ImageReader` for every inference input: DICOM, PNG/JPG/BMP/TIFF and NIfTI/MetaImage/NRRD.

Why not `LoadImaged(reader=[...])` with a list: MONAI tries a list last-to-first and catches every
failure, so each DICOM first went through PIL (with an "unable to load" log line per file), and vendor
DICOM files whose preamble holds a TIFF header (dual TIFF/DICOM, e.g. `US1_UNCR.dcm` in pydicom-data) were
silently decoded *by PIL*: no region crop, no frame selection, no DICOM metadata. This reader decides by
content first (the 'DICM' marker), then by suffix, and hands each file to exactly one reader.

All readers return rows first (`reverse_indexing=False`), the layout of the whole pipeline: PIL images
and ITK images (NIfTI's first axis is x, so ITK's rows-first array is the image as viewers show it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.data import ImageReader, ITKReader, PILReader
from monai.transforms import LoadImaged
from monai.utils import ensure_tuple

from tinyusfm_monai.data.raw_io import IMAGE_SUFFIXES as PIL_SUFFIXES
from tinyusfm_monai.dicom.reader import DICOM_FILE_SUFFIXES, UltrasoundDicomReader, looks_like_dicom


class UltrasoundImageReader(ImageReader):
    """Dispatches each file to the DICOM, PIL or ITK reader; keyword arguments go to the DICOM reader."""

    def __init__(self, reverse_indexing: bool = False, **dicom_kwargs: Any):
        super().__init__()
        self.reverse_indexing = reverse_indexing
        self.dicom = UltrasoundDicomReader(reverse_indexing=reverse_indexing, **dicom_kwargs)
        self.pil = PILReader(reverse_indexing=reverse_indexing)
        self._itk: ITKReader | None = None  # built on first use: importing ITK takes seconds

    def _itk_reader(self) -> ITKReader:
        if self._itk is None:
            self._itk = ITKReader(reverse_indexing=not self.reverse_indexing)
        return self._itk

    def reader_for(self, filename: str | os.PathLike) -> ImageReader:
        name = str(filename).lower()
        if looks_like_dicom(filename) or name.endswith(DICOM_FILE_SUFFIXES):
            return self.dicom
        if name.endswith(PIL_SUFFIXES):
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
        for key in ("affine", "original_affine"):
            if key in meta:
                meta[key] = _homogeneous_4x4(meta[key])
        return data, meta


def _homogeneous_4x4(affine: Any) -> np.ndarray:
    """ITK gives 2D images a 3x3 affine, DICOM and PIL images get 4x4; one shape lets a batch mix formats."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape == (3, 3):
        out = np.eye(4)
        out[:2, :2], out[:2, 3] = affine[:2, :2], affine[:2, 2]
        return out
    return affine


class LoadUltrasoundImaged(LoadImaged):
    """`LoadImaged` that reads with `UltrasoundImageReader` only, so its error (file + cause) is the error.

    Args:
        keys: keys of the image paths.
        image_only: return MetaTensors (True, as the bundles) or (image, meta dict).
        reader_kwargs: for the DICOM reader (frame, crop) and `reverse_indexing` (default False: rows first).
    """

    def __init__(self, keys: KeysCollection, image_only: bool = True, allow_missing_keys: bool = False, **reader_kwargs: Any):
        super().__init__(keys, image_only=image_only, allow_missing_keys=allow_missing_keys)
        self.ultrasound_reader = UltrasoundImageReader(**reader_kwargs)

    def __call__(self, data: Any, reader: ImageReader | None = None) -> Any:
        return super().__call__(data, reader or self.ultrasound_reader)
