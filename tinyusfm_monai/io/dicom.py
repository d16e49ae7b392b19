"""Read ultrasound DICOM instances into RGB frames cropped to the tissue region.

Why a module of its own: scanners write many pixel encodings (RGB, YBR, palette colour, grayscale; native, RLE,
JPEG, JPEG-LS, JPEG 2000) and burn text and calipers around the image. The networks want one thing: an
(H, W, 3) uint8 RGB image of tissue. Everything that turns a vendor file into that, and remembers how to map a
result back (the crop box, the frame numbers), lives here so the batch runner, the node and the MONAI reader agree.

Errors are `DicomInputError` with a machine-readable `reason` (see `SKIP_REASONS`) so the batch report and the
node log can say *why* an input was not processed without repeating patient data.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_voi_lut, get_decoder
from pydicom.pixels import pixel_array as decode_pixel_array

# Ultrasound storage SOP classes this package processes (PS3.4 B.5; the two retired ones are still sent by
# older scanners). Enhanced US Volume is 3D and deliberately not here.
US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
US_IMAGE_STORAGE_RETIRED = "1.2.840.10008.5.1.4.1.1.6"
US_MULTIFRAME_IMAGE_STORAGE_RETIRED = "1.2.840.10008.5.1.4.1.1.3"
ULTRASOUND_SOP_CLASSES: dict[str, str] = {
    US_IMAGE_STORAGE: "Ultrasound Image Storage",
    US_MULTIFRAME_IMAGE_STORAGE: "Ultrasound Multi-frame Image Storage",
    US_IMAGE_STORAGE_RETIRED: "Ultrasound Image Storage (Retired)",
    US_MULTIFRAME_IMAGE_STORAGE_RETIRED: "Ultrasound Multi-frame Image Storage (Retired)",
}

# Reason codes used in reports and logs. Kept short and stable: hospital IT filters on them.
NOT_DICOM = "not-dicom"
NOT_ULTRASOUND = "not-ultrasound"
NO_PIXEL_DATA = "no-pixel-data"
UNSUPPORTED_SYNTAX = "unsupported-syntax"
UNSUPPORTED_IMAGE = "unsupported-image"
CORRUPT = "corrupt"
SKIP_REASONS = (NOT_DICOM, NOT_ULTRASOUND, NO_PIXEL_DATA, UNSUPPORTED_SYNTAX, UNSUPPORTED_IMAGE, CORRUPT)

_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_REGION_2D = 1  # RegionSpatialFormat: 2D (tissue or flow)
_REGION_TISSUE = 1  # RegionDataType: tissue


class DicomInputError(Exception):
    """An input that cannot be processed; `reason` is one of SKIP_REASONS, `detail` is free of patient data."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str) -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}: {detail}")


@dataclass(frozen=True)
class CropBox:
    """Pixel box [x0, x1) x [y0, y1) in the source frame; (x, y) = (column, row), ends exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]

    def crop(self, frame: np.ndarray) -> np.ndarray:
        return frame[self.y0 : self.y1, self.x0 : self.x1]

    def paste(self, values: np.ndarray, rows: int, columns: int, fill: int = 0) -> np.ndarray:
        """Put a crop-sized array back into a full (rows, columns) frame: how results return to source pixels."""
        if values.shape[:2] != (self.height, self.width):
            raise ValueError(f"array of shape {values.shape[:2]} does not fit crop box {self.as_list()}")
        full = np.full((rows, columns) + values.shape[2:], fill, dtype=values.dtype)
        full[self.y0 : self.y1, self.x0 : self.x1] = values
        return full


@dataclass
class PhysicalSpacing:
    """Pixel size of the chosen region in millimetres (from PhysicalDeltaX/Y when the units are cm)."""

    x_mm: float
    y_mm: float


@dataclass
class UltrasoundImage:
    """A decoded ultrasound instance: the selected frames, full size, plus what is needed to map results back."""

    path: str
    dataset: Dataset  # full dataset as read (pixel data included); used as the reference for SEG/SR/SC
    frames: np.ndarray  # (N, Rows, Columns, 3) uint8 RGB, full frame (burned-in text included)
    frame_numbers: list[int]  # DICOM frame numbers (1-based) of `frames`
    crop_box: CropBox
    spacing: PhysicalSpacing | None = None
    is_multiframe: bool = False
    number_of_frames: int = 1

    @property
    def rows(self) -> int:
        return int(self.dataset.Rows)

    @property
    def columns(self) -> int:
        return int(self.dataset.Columns)

    def cropped(self, i: int) -> np.ndarray:
        """The i-th selected frame cropped to the tissue region, (h, w, 3) uint8: what a predictor receives."""
        return np.ascontiguousarray(self.crop_box.crop(self.frames[i]))


# ---------------------------------------------------------------------------------------------------------
# frame policy


def parse_frame_policy(policy: str | int) -> Callable[[int], list[int]]:
    """Turn 'all' | 'middle' | 'first' | 'every:N' (or an int N, = every Nth) into a function n -> 0-based indices.

    Why a policy: a 30 s cine has hundreds of frames; a PACS admin usually wants a key frame or a sample.
    """
    if isinstance(policy, int) and not isinstance(policy, bool):
        step = policy
    else:
        text = str(policy).strip().lower()
        if text == "all":
            return lambda n: list(range(n))
        if text == "middle":
            return lambda n: [(n - 1) // 2] if n > 0 else []
        if text == "first":
            return lambda n: [0] if n > 0 else []
        if text.startswith("every:") or text.startswith("every_"):
            try:
                step = int(text[6:])
            except ValueError:
                raise ValueError(f"frame policy {policy!r}: expected every:N with an integer N") from None
        else:
            raise ValueError(f"unknown frame policy {policy!r}; use all, middle, first or every:N")
    if step < 1:
        raise ValueError(f"frame policy {policy!r}: N must be >= 1")
    return lambda n: list(range(0, n, step))


# ---------------------------------------------------------------------------------------------------------
# header checks


def read_dataset(path: str | os.PathLike, *, pixels: bool = True) -> Dataset:
    """dcmread with every failure turned into a DicomInputError (not-dicom / corrupt).

    pixels=False defers large values instead of stopping before Pixel Data, so header checks still see that
    the element exists without loading it."""
    options = {} if pixels else {"defer_size": 4096}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # vendor quirks warn a lot; we judge by what decodes
            try:
                return pydicom.dcmread(path, **options)
            except InvalidDicomError:
                # Old archives export bare datasets (no preamble, no file meta): accept them when they parse
                # into something with a SOP class; anything else (text, images, reports) is not DICOM.
                ds = pydicom.dcmread(path, force=True, **options)
                if "SOPClassUID" not in ds:
                    raise DicomInputError(
                        path, NOT_DICOM, "not a DICOM file (no DICM prefix, no SOP Class UID)"
                    ) from None
                _add_missing_transfer_syntax(ds)
                return ds
    except DicomInputError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, NotImplementedError) as exc:
        raise DicomInputError(path, CORRUPT, f"cannot parse the file: {type(exc).__name__}: {exc}") from None


def _add_missing_transfer_syntax(ds: Dataset) -> None:
    """A bare dataset is native-encoded; record the encoding pydicom detected so the pixel decoders can run."""
    if "TransferSyntaxUID" in ds.file_meta:
        return
    implicit, little = ds.original_encoding
    if implicit:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    else:
        explicit = pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian
        ds.file_meta.TransferSyntaxUID = explicit


def check_ultrasound(path: str | os.PathLike, ds: Dataset) -> None:
    """Raise unless `ds` is an ultrasound image instance whose pixel data this installation can decode."""
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class not in ULTRASOUND_SOP_CLASSES:
        name = pydicom.uid.UID(sop_class).name if sop_class else "no SOP Class UID"
        modality = ds.get("Modality", "none")
        raise DicomInputError(path, NOT_ULTRASOUND, f"SOP class {name}, modality {modality}")
    if not any(k in ds for k in _PIXEL_DATA_KEYWORDS):
        missing = [k for k in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation") if k not in ds]
        if missing:  # a US instance without its Image Pixel module is a cut-off file, not a pixel-less one
            raise DicomInputError(path, CORRUPT, f"truncated: no Pixel Data and no {', '.join(missing)}")
        raise DicomInputError(path, NO_PIXEL_DATA, "the instance has no Pixel Data element")
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if syntax is None:
        raise DicomInputError(path, CORRUPT, "no Transfer Syntax UID in the file meta information")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DicomInputError(path, UNSUPPORTED_SYNTAX, f"no decoder exists for transfer syntax {syntax}") from None
    if not decoder.is_available:
        raise DicomInputError(
            path,
            UNSUPPORTED_SYNTAX,
            f"transfer syntax {syntax.name} ({syntax}) needs a decoding plugin that is not installed "
            f"({'; '.join(decoder.missing_dependencies)})",
        )
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in _PHOTOMETRIC:
        raise DicomInputError(path, UNSUPPORTED_IMAGE, f"photometric interpretation {photometric or 'missing'}")


# ---------------------------------------------------------------------------------------------------------
# pixels -> RGB uint8


def _scale_to_uint8(values: np.ndarray, bits: int) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    top = float(2**bits - 1) if bits > 0 else float(values.max() or 1)
    return np.clip(np.rint(values.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)


def _monochrome(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    """Grayscale -> RGB; VOI window when the file has one, MONOCHROME1 inverted so that white means echo."""
    if int(ds.get("BitsStored", 8)) > 8 and ("WindowCenter" in ds or "VOILUTSequence" in ds):
        values = apply_voi_lut(frame, ds).astype(np.float64)
        lo, hi = float(values.min()), float(values.max())
        gray = np.zeros(values.shape, np.uint8) if hi <= lo else ((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    else:
        gray = _scale_to_uint8(frame, int(ds.get("BitsStored", 8)))
    if ds.PhotometricInterpretation == "MONOCHROME1":
        gray = 255 - gray
    return np.repeat(gray[..., None], 3, axis=-1)


def _palette(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    """PALETTE COLOR -> RGB. LUT entries are 8 or 16 bit (descriptor value 3); some vendors declare 16 bits and
    store 8-bit values, so the scale follows the data: anything above 255 means 16-bit entries."""
    rgb = apply_color_lut(frame, ds)
    if rgb.dtype == np.uint8:
        return rgb
    if int(rgb.max(initial=0)) > 255:
        return (rgb.astype(np.uint16) >> 8).astype(np.uint8)  # high byte: exact for 8-bit values stored as v*256
    return rgb.astype(np.uint8)


def _colour(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    """RGB / YBR_*: pydicom already converted YBR to RGB (as_rgb=True); only the bit depth may need scaling."""
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"expected 3 samples per pixel, decoded shape {frame.shape}")
    return _scale_to_uint8(frame, int(ds.get("BitsStored", 8)))


_PHOTOMETRIC: dict[str, Callable[[np.ndarray, Dataset], np.ndarray]] = {
    "MONOCHROME1": _monochrome,
    "MONOCHROME2": _monochrome,
    "PALETTE COLOR": _palette,
    "RGB": _colour,
    "YBR_FULL": _colour,
    "YBR_FULL_422": _colour,
    "YBR_RCT": _colour,
    "YBR_ICT": _colour,
}


def decode_frame(ds: Dataset, index: int) -> np.ndarray:
    """Decode one frame (0-based) to (Rows, Columns, 3) uint8 RGB."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = decode_pixel_array(ds, index=index if frames > 1 else None, as_rgb=True)
    if frames > 1 and raw.ndim >= 3 and raw.shape[0] == 1 and raw.ndim == (4 if ds.SamplesPerPixel == 3 else 3):
        raw = raw[0]
    rgb = _PHOTOMETRIC[str(ds.PhotometricInterpretation)](raw, ds)
    if rgb.shape != (int(ds.Rows), int(ds.Columns), 3):
        raise ValueError(f"decoded frame has shape {rgb.shape}, expected ({ds.Rows}, {ds.Columns}, 3)")
    return np.ascontiguousarray(rgb)


# ---------------------------------------------------------------------------------------------------------
# Sequence of Ultrasound Regions -> crop box


def _clamped_box(region: Dataset, rows: int, columns: int) -> CropBox | None:
    try:
        x0 = max(0, int(region.RegionLocationMinX0))
        y0 = max(0, int(region.RegionLocationMinY0))
        x1 = min(columns, int(region.RegionLocationMaxX1) + 1)  # Max*1 are inclusive pixel positions
        y1 = min(rows, int(region.RegionLocationMaxY1) + 1)
    except (AttributeError, TypeError, ValueError):
        return None
    return CropBox(x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def tissue_region(ds: Dataset) -> tuple[CropBox, Dataset | None]:
    """The largest 2D tissue region (bounds clamped to the image; vendors overshoot), or the full frame.

    Preference: 2D tissue regions, then any 2D region; ties keep the first listed. Without a usable region the
    whole frame is used (and burned-in text, if any, stays visible to the model).
    """
    rows, columns = int(ds.Rows), int(ds.Columns)
    regions = list(ds.get("SequenceOfUltrasoundRegions", []) or [])
    for wanted_tissue in (True, False):
        best: tuple[int, CropBox, Dataset] | None = None
        for region in regions:
            if region.get("RegionSpatialFormat") != _REGION_2D:
                continue
            if wanted_tissue and region.get("RegionDataType") != _REGION_TISSUE:
                continue
            box = _clamped_box(region, rows, columns)
            if box is not None and (best is None or box.width * box.height > best[0]):
                best = (box.width * box.height, box, region)
        if best is not None:
            return best[1], best[2]
    return CropBox(0, 0, columns, rows), None


def region_spacing(region: Dataset | None) -> PhysicalSpacing | None:
    """Pixel size in mm when the region is calibrated in cm (PhysicalUnitsX/YDirection == 3)."""
    if region is None:
        return None
    if region.get("PhysicalUnitsXDirection") != 3 or region.get("PhysicalUnitsYDirection") != 3:
        return None
    dx, dy = abs(float(region.get("PhysicalDeltaX", 0) or 0)), abs(float(region.get("PhysicalDeltaY", 0) or 0))
    return PhysicalSpacing(dx * 10.0, dy * 10.0) if dx > 0 and dy > 0 else None


# ---------------------------------------------------------------------------------------------------------
# the one entry point


def read_ultrasound(path: str | os.PathLike, frames: str | int | Callable[[int], list[int]] = "all") -> UltrasoundImage:
    """Read, check and decode an ultrasound instance; raises DicomInputError naming the file and the cause."""
    path = str(path)
    ds = read_dataset(path, pixels=True)
    check_ultrasound(path, ds)
    policy = frames if callable(frames) else parse_frame_policy(frames)
    try:
        number_of_frames = int(ds.get("NumberOfFrames", 1) or 1)
        if int(ds.Rows) < 1 or int(ds.Columns) < 1:
            raise ValueError("Rows/Columns are zero")
        indices = policy(number_of_frames)
        if not indices:
            raise ValueError("the frame policy selected no frame")
        decoded = np.stack([decode_frame(ds, i) for i in indices])
    except DicomInputError:
        raise
    except Exception as exc:  # decoders raise many types on truncated or damaged data
        raise DicomInputError(path, CORRUPT, f"pixel data cannot be decoded: {type(exc).__name__}: {exc}") from None
    box, region = tissue_region(ds)
    multiframe = number_of_frames > 1 or str(ds.SOPClassUID) in (
        US_MULTIFRAME_IMAGE_STORAGE,
        US_MULTIFRAME_IMAGE_STORAGE_RETIRED,
    )
    return UltrasoundImage(
        path=path,
        dataset=ds,
        frames=decoded,
        frame_numbers=[i + 1 for i in indices],
        crop_box=box,
        spacing=region_spacing(region),
        is_multiframe=multiframe,
        number_of_frames=number_of_frames,
    )
