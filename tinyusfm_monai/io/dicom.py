"""Read ultrasound DICOM instances into RGB frames cropped to the tissue region.

Why a module of its own: scanners write many pixel encodings (RGB, YBR, palette colour, grayscale; native, RLE,
JPEG, JPEG-LS, JPEG 2000) and burn text and calipers around the image. The networks want one thing: an
(H, W, 3) uint8 RGB image of tissue. Everything that turns a vendor file into that, and remembers how to map a
result back (the crop box, the frame numbers), lives here so the batch runner, the node and the MONAI reader agree.

Errors are `DicomInputError` with a machine-readable `reason` (see `SKIP_REASONS`) so the batch report and the
node log can say *why* an input was not processed without repeating patient data.

Memory: a DICOM file is a promise of pixels that the header makes and the decoder keeps. A 2.5 MB JPEG can
decode to 13000 x 13000 pixels, an 18 MB RLE stream to 20000 x 20000. So every instance is judged from its
header first (`InputLimits`: pixels per frame, frames, file size, bits, samples), each compressed frame's own
codestream header is checked against the DICOM header before a decoder sees it, and frames are decoded one at a
time straight from the file (`UltrasoundImage.iter_frames`), never all at once and never with the whole Pixel
Data element in memory.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_voi_lut, get_decoder, iter_pixels

from .formats import file_kind

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
#: SOP classes whose IOD holds several frames. This, not NumberOfFrames, decides whether results reference
#: frame numbers: it is the rule of the standard and of highdicom (`is_multiframe_image`), so the writer and
#: highdicom can never disagree (a single-frame class whose header says NumberOfFrames 2 is still single-frame).
MULTIFRAME_SOP_CLASSES = (US_MULTIFRAME_IMAGE_STORAGE, US_MULTIFRAME_IMAGE_STORAGE_RETIRED)

# Reason codes used in reports and logs. Kept short and stable: hospital IT filters on them.
NOT_DICOM = "not-dicom"
NOT_ULTRASOUND = "not-ultrasound"
NO_PIXEL_DATA = "no-pixel-data"
UNSUPPORTED_SYNTAX = "unsupported-syntax"
UNSUPPORTED_IMAGE = "unsupported-image"
CORRUPT = "corrupt"
TOO_LARGE = "too-large"
MISSING_UID = "missing-uid"
INVALID_UID = "invalid-uid"
NOT_REGULAR_FILE = "not-a-regular-file"
SKIP_REASONS = (
    NOT_DICOM,
    NOT_ULTRASOUND,
    NO_PIXEL_DATA,
    UNSUPPORTED_SYNTAX,
    UNSUPPORTED_IMAGE,
    CORRUPT,
    TOO_LARGE,
    MISSING_UID,
    INVALID_UID,
    NOT_REGULAR_FILE,
)

_PIXEL_DATA_TAGS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}
_REGION_2D = 1  # RegionSpatialFormat: 2D (tissue or flow)
_REGION_TISSUE = 1  # RegionDataType: tissue
#: a Sequence of Ultrasound Regions entry smaller than this (either side, pixels) is not an image region: vendors
#: write (0, 0, 0, 0) placeholders, and a crop smaller than one 16-pixel ViT patch carries no image
MIN_REGION_SIZE = 16
#: an image smaller than this on a side is not an ultrasound image (and a 1 x 1 array breaks image writers)
MIN_IMAGE_SIDE = 8
#: a UID as a path component and as a reference: digits and dots, no empty component, at most 64 characters
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
IDENTITY_KEYWORDS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")


class DicomInputError(Exception):
    """An input that cannot be processed; `reason` is one of SKIP_REASONS, `detail` is free of patient data."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str) -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}: {detail}")


@dataclass(frozen=True)
class InputLimits:
    """What one instance may cost, judged from its header before any pixel is decoded.

    The defaults keep the node's peak memory under 1.5 GB with a bundle model loaded (benchmarks/node_load.py
    measures it) and are above real ultrasound: scanners write frames of at most 1920 x 1080 (2 Mpx), screen
    captures reach 3840 x 2160 (4K UHD, the default limit), cines a few hundred frames (3000 = 100 s at 30 fps).

    Args:
        max_frame_pixels: Rows x Columns of one frame.
        max_frames: NumberOfFrames of one instance (all frames, whatever the frame policy selects).
        max_file_bytes: size of the instance as stored (file or spooled dataset).
    """

    max_frame_pixels: int = 3840 * 2160
    max_frames: int = 3000
    max_file_bytes: int = 2 * 1024**3

    def __post_init__(self) -> None:
        for name in ("max_frame_pixels", "max_frames", "max_file_bytes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive number")


DEFAULT_LIMITS = InputLimits()


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
    """An ultrasound instance: its header, the selected frames (decoded now or on demand) and what is needed to
    map results back.

    `read_ultrasound` fills `frames` (all selected frames decoded); `open_ultrasound` leaves it None and decodes
    one frame at a time in `iter_frames`, which is what keeps a 900-frame cine in the memory of one frame.
    """

    path: str
    dataset: Dataset  # the header (no Pixel Data); the reference for SEG/SR/SC
    frames: np.ndarray | None  # (N, Rows, Columns, 3) uint8 RGB when decoded eagerly, else None
    frame_numbers: list[int]  # DICOM frame numbers (1-based) of the selected frames
    crop_box: CropBox
    spacing: PhysicalSpacing | None = None
    is_multiframe: bool = False  # the SOP class is a multi-frame one: results reference frame numbers
    number_of_frames: int = 1
    crop_note: str = ""  # which region the crop comes from, or why the full frame is used
    notes: list[str] = field(default_factory=list)  # anything the report should say about how it was read
    _decoder: Callable[[list[int]], Iterator[np.ndarray]] | None = field(default=None, repr=False)

    @property
    def rows(self) -> int:
        return int(self.dataset.Rows)

    @property
    def columns(self) -> int:
        return int(self.dataset.Columns)

    def iter_frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """(i, full (Rows, Columns, 3) uint8 frame) for each selected frame, decoded one at a time."""
        if self.frames is not None:
            for i in range(len(self.frame_numbers)):
                yield i, self.frames[i]
            return
        assert self._decoder is not None
        indices = [n - 1 for n in self.frame_numbers]
        try:
            for i, frame in enumerate(self._decoder(indices)):
                yield i, frame
        except DicomInputError:
            raise
        except Exception as exc:  # decoders raise many types on truncated or damaged data
            raise _decode_error(self.path, exc) from None

    def frame(self, i: int) -> np.ndarray:
        """The i-th selected frame, full size (decoded now when the image was opened lazily)."""
        if self.frames is not None:
            return self.frames[i]
        assert self._decoder is not None
        try:
            return next(iter(self._decoder([self.frame_numbers[i] - 1])))
        except DicomInputError:
            raise
        except Exception as exc:
            raise _decode_error(self.path, exc) from None

    def cropped(self, i: int, frame: np.ndarray | None = None) -> np.ndarray:
        """The i-th selected frame cropped to the tissue region, (h, w, 3) uint8: what a predictor receives."""
        full = self.frame(i) if frame is None else frame
        return np.ascontiguousarray(self.crop_box.crop(full))


def _decode_error(path: str, exc: BaseException) -> DicomInputError:
    return DicomInputError(path, CORRUPT, f"pixel data cannot be decoded: {type(exc).__name__}: {exc}")


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


def check_regular_file(path: str | os.PathLike) -> int:
    """The file's size; raises unless `path` is (or links to) a regular file.

    Opening a FIFO blocks until a writer appears and a device can stream forever: the type is checked with
    stat() before anything opens the file."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise DicomInputError(
            path, NOT_REGULAR_FILE, f"cannot be opened: {exc.strerror or type(exc).__name__}"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise DicomInputError(path, NOT_REGULAR_FILE, f"is a {file_kind(info.st_mode)}, not a regular file")
    return info.st_size


def read_dataset(path: str | os.PathLike, *, pixels: bool = True) -> Dataset:
    """dcmread with every failure turned into a DicomInputError (not-dicom / corrupt / not-a-regular-file).

    pixels=False stops before the Pixel Data element (nothing of it is read); whether the instance has pixel
    data is then recorded in `ds.tinyusfm_pixel_data` (the keyword, or None)."""
    check_regular_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # vendor quirks warn a lot; we judge by what decodes
            if not pixels:
                return _read_header(path)
            try:
                return pydicom.dcmread(path)
            except InvalidDicomError:
                # Old archives export bare datasets (no preamble, no file meta): accept them when they parse
                # into something with a SOP class; anything else (text, images, reports) is not DICOM.
                ds = pydicom.dcmread(path, force=True)
                _require_sop_class(path, ds)
                _add_missing_transfer_syntax(ds)
                return ds
    except DicomInputError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, NotImplementedError) as exc:
        raise DicomInputError(path, CORRUPT, f"cannot parse the file: {type(exc).__name__}: {exc}") from None


def _require_sop_class(path: str | os.PathLike, ds: Dataset) -> None:
    if "SOPClassUID" not in ds:
        raise DicomInputError(path, NOT_DICOM, "not a DICOM file (no DICM prefix, no SOP Class UID)")


def _read_header(path: str | os.PathLike) -> Dataset:
    """Everything before Pixel Data, plus where Pixel Data starts (`ds.tinyusfm_pixel_offset`)."""
    with open(path, "rb") as fh:
        try:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
            bare = False
        except InvalidDicomError:
            fh.seek(0)
            ds = pydicom.dcmread(fh, force=True, stop_before_pixels=True)
            _require_sop_class(path, ds)
            bare = True
        offset = fh.tell()
        tag_bytes = fh.read(4)
    keyword = None
    if len(tag_bytes) == 4:
        little = ds.original_encoding[1] if ds.original_encoding[1] is not None else True
        group, element = struct.unpack("<HH" if little else ">HH", tag_bytes)
        keyword = _PIXEL_DATA_TAGS.get((group << 16) | element)
    if bare:
        _add_missing_transfer_syntax(ds)
    ds.tinyusfm_pixel_data = keyword  # not a DICOM attribute: pydicom keeps it as a plain Python attribute
    ds.tinyusfm_pixel_offset = offset if keyword else None
    ds.tinyusfm_bare = bare
    return ds


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


def _has_pixel_data(ds: Dataset) -> bool:
    if hasattr(ds, "tinyusfm_pixel_data"):
        return ds.tinyusfm_pixel_data is not None
    return any(k in ds for k in _PIXEL_DATA_TAGS.values())


def check_ultrasound(path: str | os.PathLike, ds: Dataset) -> None:
    """Raise unless `ds` is an ultrasound image instance whose pixel data this installation can decode."""
    sop_class = str(ds.get("SOPClassUID", ""))
    modality = str(ds.get("Modality", "") or "")
    if sop_class not in ULTRASOUND_SOP_CLASSES:
        name = pydicom.uid.UID(sop_class).name if sop_class else "no SOP Class UID"
        raise DicomInputError(path, NOT_ULTRASOUND, f"SOP class {name}, modality {modality or 'none'}")
    if modality and modality != "US":
        # e.g. a CT slice relabelled with an ultrasound SOP class: the model would segment it confidently
        raise DicomInputError(
            path, NOT_ULTRASOUND, f"SOP class {ULTRASOUND_SOP_CLASSES[sop_class]} but Modality is {modality[:16]}"
        )
    if not _has_pixel_data(ds):
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


def _header_int(path: str | os.PathLike, ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    try:
        return int(value if value not in (None, "") else default)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DicomInputError(path, CORRUPT, f"{keyword} is not a number") from None


def check_limits(
    path: str | os.PathLike, ds: Dataset, limits: InputLimits = DEFAULT_LIMITS, file_bytes: int | None = None
) -> None:
    """Refuse, from the header alone, what would cost more than `limits` or what no decoder here should see."""
    rows = _header_int(path, ds, "Rows", 0)
    columns = _header_int(path, ds, "Columns", 0)
    frames = _header_int(path, ds, "NumberOfFrames", 1)
    samples = _header_int(path, ds, "SamplesPerPixel", 1)
    bits = _header_int(path, ds, "BitsAllocated", 8)
    if rows < 1 or columns < 1:
        raise DicomInputError(path, CORRUPT, f"Rows/Columns are {rows} x {columns}")
    if rows < MIN_IMAGE_SIDE or columns < MIN_IMAGE_SIDE:
        raise DicomInputError(
            path, UNSUPPORTED_IMAGE, f"{columns} x {rows} pixels, smaller than {MIN_IMAGE_SIDE} x {MIN_IMAGE_SIDE}"
        )
    if frames < 1:
        raise DicomInputError(path, CORRUPT, f"NumberOfFrames is {frames}")
    if samples not in (1, 3):
        raise DicomInputError(path, UNSUPPORTED_IMAGE, f"SamplesPerPixel {samples} (1 or 3 are supported)")
    if bits not in (8, 16):
        raise DicomInputError(path, UNSUPPORTED_IMAGE, f"BitsAllocated {bits} (8 or 16 are supported)")
    if rows * columns > limits.max_frame_pixels:
        raise DicomInputError(
            path,
            TOO_LARGE,
            f"{rows} x {columns} = {rows * columns:,} pixels per frame, over the limit of "
            f"{limits.max_frame_pixels:,} (max_frame_pixels)",
        )
    if frames > limits.max_frames:
        raise DicomInputError(
            path, TOO_LARGE, f"{frames:,} frames, over the limit of {limits.max_frames:,} (max_frames)"
        )
    if file_bytes is not None and file_bytes > limits.max_file_bytes:
        raise DicomInputError(
            path,
            TOO_LARGE,
            f"{file_bytes:,} bytes, over the limit of {limits.max_file_bytes:,} (max_file_bytes)",
        )


def check_identity(path: str | os.PathLike, ds: Dataset) -> None:
    """Refuse an instance whose SOP/Series/Study Instance UID is missing or not a UID.

    The results reference the source by these UIDs and their file names are built from them, so an instance
    without them cannot be answered, and one with `../../tmp/x` as a UID must never reach a path. A derived
    stand-in UID is not an option: a SEG pointing at an instance the PACS does not have is worse than none."""
    for keyword in IDENTITY_KEYWORDS:
        value = ds.get(keyword)
        if value is None or str(value).strip() == "":
            raise DicomInputError(path, MISSING_UID, f"missing {keyword}")
        if not is_valid_uid(str(value)):
            raise DicomInputError(
                path, INVALID_UID, f"{keyword} is not a valid UID (digits and dots, at most 64 characters)"
            )


def is_valid_uid(value: str) -> bool:
    """Digits and dots, no empty component, at most 64 characters (PS3.5 9.1; leading zeros tolerated)."""
    return len(value) <= 64 and UID_PATTERN.fullmatch(value) is not None


# ---------------------------------------------------------------------------------------------------------
# compressed frames: the codestream must not promise more pixels than the DICOM header


def _codestream_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG / JPEG-LS SOF or a JPEG 2000 SIZ / JP2 ihdr header; None if not found."""
    if data[:4] == b"\x00\x00\x00\x0c" and data[4:8] == b"jP  ":  # JP2 file format: find the ihdr box
        at = data.find(b"ihdr", 0, 4096)
        if at >= 0 and len(data) >= at + 12:
            height, width = struct.unpack(">II", data[at + 4 : at + 12])
            return width, height
        return None
    if data[:2] == b"\xff\x4f":  # J2K / HTJ2K codestream: SOC then SIZ
        at = data.find(b"\xff\x51", 0, 4096)
        if at >= 0 and len(data) >= at + 22:
            xsiz, ysiz, xo, yo = struct.unpack(">IIII", data[at + 6 : at + 22])
            return xsiz - xo, ysiz - yo
        return None
    if data[:2] == b"\xff\xd8":  # JPEG (any process) and JPEG-LS: walk the markers to the frame header
        i = 2
        while i + 9 <= len(data) and i < 1 << 20:
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:
                i += 1
                continue
            length = struct.unpack(">H", data[i + 2 : i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7):
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return width, height
            i += 2 + length
    return None


def _encapsulated_frames(path: str | os.PathLike, ds: Dataset) -> Iterator[bytes]:
    """The encoded frames of an encapsulated Pixel Data element, read one at a time from the file."""
    from pydicom.encaps import generate_frames

    with open(path, "rb") as fh:
        fh.seek(ds.tinyusfm_pixel_offset + 12)  # tag (4) + VR 'OB' (2) + reserved (2) + length (4)
        yield from generate_frames(fh, number_of_frames=_header_int(path, ds, "NumberOfFrames", 1))


def check_codestreams(path: str | os.PathLike, ds: Dataset, indices: list[int]) -> None:
    """Every selected compressed frame must decode to at most Rows x Columns pixels (a lying header would
    otherwise let a small JPEG allocate gigabytes in the decoder). Native and RLE data are sized by the header."""
    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_encapsulated or syntax == pydicom.uid.RLELossless or ds.tinyusfm_pixel_offset is None:
        return
    rows, columns = int(ds.Rows), int(ds.Columns)
    wanted = set(indices)
    try:
        for index, frame in enumerate(_encapsulated_frames(path, ds)):
            if index in wanted:
                size = _codestream_size(frame)
                if size is not None and size[0] * size[1] > rows * columns:
                    raise DicomInputError(
                        path,
                        CORRUPT,
                        f"frame {index + 1} is encoded as {size[0]} x {size[1]} pixels but the header says "
                        f"{columns} x {rows}",
                    )
            if index >= max(wanted):
                return
    except DicomInputError:
        raise
    except Exception as exc:  # a broken item structure: the decoder would fail too
        raise DicomInputError(path, CORRUPT, f"encapsulated pixel data: {type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------------------------------------------------
# pixels -> RGB uint8


def _scale_to_uint8(values: np.ndarray, bits: int) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    top = float(2**bits - 1) if bits > 0 else float(values.max() or 1)
    scaled = values.astype(np.float32)  # float32, not float64: half the memory of a 16 Mpx frame
    scaled *= np.float32(255.0 / top)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def _monochrome(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    """Grayscale -> RGB; VOI window when the file has one, MONOCHROME1 inverted so that white means echo."""
    if int(ds.get("BitsStored", 8)) > 8 and ("WindowCenter" in ds or "VOILUTSequence" in ds):
        values = apply_voi_lut(frame, ds).astype(np.float32)
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


def to_rgb(raw: np.ndarray, ds: Dataset) -> np.ndarray:
    """One decoded frame (as pydicom returns it with as_rgb=True) -> (Rows, Columns, 3) uint8 RGB."""
    if raw.ndim == (4 if int(ds.get("SamplesPerPixel", 1)) == 3 else 3) and raw.shape[0] == 1:
        raw = raw[0]
    rgb = _PHOTOMETRIC[str(ds.PhotometricInterpretation)](raw, ds)
    if rgb.shape != (int(ds.Rows), int(ds.Columns), 3):
        raise ValueError(f"decoded frame has shape {rgb.shape}, expected ({ds.Rows}, {ds.Columns}, 3)")
    return np.ascontiguousarray(rgb)


def _frame_decoder(path: str, ds: Dataset) -> Callable[[list[int]], Iterator[np.ndarray]]:
    """indices -> RGB frames, one at a time. Reads from the file frame by frame (pydicom `iter_pixels` on a
    path), so neither the Pixel Data element nor the other frames are ever held in memory. A bare dataset (no
    file meta) gets the transfer syntax its encoding was read with."""
    extra = {"transfer_syntax_uid": ds.file_meta.TransferSyntaxUID} if getattr(ds, "tinyusfm_bare", False) else {}

    def decode(indices: list[int]) -> Iterator[np.ndarray]:
        check_codestreams(path, ds, indices)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for raw in iter_pixels(path, indices=indices, as_rgb=True, **extra):
                yield to_rgb(raw, ds)

    return decode


def decode_frame(ds: Dataset, index: int) -> np.ndarray:
    """Decode one frame (0-based) of a dataset read with its pixel data to (Rows, Columns, 3) uint8 RGB."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = next(iter_pixels(ds, indices=[index], as_rgb=True))
    return to_rgb(raw, ds)


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
    if x1 - x0 < MIN_REGION_SIZE or y1 - y0 < MIN_REGION_SIZE:
        return None  # e.g. a (0, 0, 0, 0) placeholder, which would otherwise become a 1 x 1 crop
    return CropBox(x0, y0, x1, y1)


def choose_crop(ds: Dataset) -> tuple[CropBox, Dataset | None, str]:
    """(box, region, note): the largest usable 2D tissue region (bounds clamped to the image; vendors
    overshoot), else the largest usable 2D region, else the full frame; `note` says which and why.

    Ties keep the first listed. Regions smaller than MIN_REGION_SIZE on a side are unusable (and named in the
    note). Without a usable region the whole frame is used (burned-in text, if any, stays visible to the model).
    """
    rows, columns = int(ds.Rows), int(ds.Columns)
    regions = list(ds.get("SequenceOfUltrasoundRegions", []) or [])
    unusable = []
    for wanted_tissue in (True, False):
        best: tuple[int, int, CropBox, Dataset] | None = None
        for number, region in enumerate(regions, start=1):
            if region.get("RegionSpatialFormat") != _REGION_2D:
                continue
            if wanted_tissue and region.get("RegionDataType") != _REGION_TISSUE:
                continue
            box = _clamped_box(region, rows, columns)
            if box is None:
                if number not in unusable:
                    unusable.append(number)
                continue
            if best is None or box.width * box.height > best[0]:
                best = (box.width * box.height, number, box, region)
        if best is not None:
            kind = "2D tissue region" if wanted_tissue else "2D region"
            note = f"{kind} {best[1]} of {len(regions)} {best[2].as_list()}"
            if unusable:
                note += f" (region(s) {', '.join(map(str, unusable))} unusable: under {MIN_REGION_SIZE} px)"
            return best[2], best[3], note
    if not regions:
        note = "full frame (no Sequence of Ultrasound Regions)"
    elif unusable:
        note = f"full frame (region(s) {', '.join(map(str, unusable))} unusable: under {MIN_REGION_SIZE} px)"
    else:
        note = "full frame (no 2D region)"
    return CropBox(0, 0, columns, rows), None, note


def tissue_region(ds: Dataset) -> tuple[CropBox, Dataset | None]:
    """The crop box and its region (None = full frame); `choose_crop` also says why."""
    box, region, _ = choose_crop(ds)
    return box, region


def region_spacing(region: Dataset | None) -> PhysicalSpacing | None:
    """Pixel size in mm when the region is calibrated in cm (PhysicalUnitsX/YDirection == 3)."""
    if region is None:
        return None
    if region.get("PhysicalUnitsXDirection") != 3 or region.get("PhysicalUnitsYDirection") != 3:
        return None
    dx, dy = abs(float(region.get("PhysicalDeltaX", 0) or 0)), abs(float(region.get("PhysicalDeltaY", 0) or 0))
    return PhysicalSpacing(dx * 10.0, dy * 10.0) if dx > 0 and dy > 0 else None


# ---------------------------------------------------------------------------------------------------------
# the entry points


def open_ultrasound(
    path: str | os.PathLike,
    frames: str | int | Callable[[int], list[int]] = "all",
    limits: InputLimits = DEFAULT_LIMITS,
) -> UltrasoundImage:
    """Read the header, check it (ultrasound, decodable, within `limits`) and select the frames; no pixel is
    decoded yet (`UltrasoundImage.iter_frames` decodes them one at a time). Raises DicomInputError."""
    path = str(path)
    size = check_regular_file(path)
    ds = read_dataset(path, pixels=False)
    check_ultrasound(path, ds)
    check_limits(path, ds, limits, size)
    policy = frames if callable(frames) else parse_frame_policy(frames)
    number_of_frames = _header_int(path, ds, "NumberOfFrames", 1)
    multiframe = str(ds.SOPClassUID) in MULTIFRAME_SOP_CLASSES
    notes = []
    if not multiframe and number_of_frames > 1:
        # results of a single-frame SOP class cannot reference a frame number (the standard, and highdicom,
        # say so); frame 1 is what a reference to the instance denotes
        notes.append(f"single-frame SOP class declares {number_of_frames} frames: only frame 1 processed")
        indices = [0]
    else:
        indices = policy(number_of_frames)
    if not indices:
        raise DicomInputError(path, CORRUPT, "the frame policy selected no frame")
    if max(indices) >= number_of_frames or min(indices) < 0:
        raise DicomInputError(path, CORRUPT, f"frame index {max(indices)} outside {number_of_frames} frames")
    box, region, crop_note = choose_crop(ds)
    return UltrasoundImage(
        path=path,
        dataset=ds,
        frames=None,
        frame_numbers=[i + 1 for i in indices],
        crop_box=box,
        spacing=region_spacing(region),
        is_multiframe=multiframe,
        number_of_frames=number_of_frames,
        crop_note=crop_note,
        notes=notes,
        _decoder=_frame_decoder(path, ds),
    )


def read_ultrasound(
    path: str | os.PathLike,
    frames: str | int | Callable[[int], list[int]] = "all",
    limits: InputLimits = DEFAULT_LIMITS,
) -> UltrasoundImage:
    """`open_ultrasound` and decode the selected frames into `frames` (for a few frames: readers, tests)."""
    image = open_ultrasound(path, frames, limits)
    decoded = [frame for _, frame in image.iter_frames()]
    image.frames = np.stack(decoded)
    return image
