"""Shared helpers for the DICOM tests: real vendor files, transcoded variants, stand-in predictors, tool checks.

The predictors here are deterministic stand-ins for the bundle models until `tinyusfm_monai.bundle.predictor`
exists: they are real functions of the pixels (threshold / mean intensity), so results differ between images and
can be checked, but they are not trained models.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEGLSLossless

from tinyusfm_monai.data.registry import Task, get_task

# real ultrasound files: (name, photometric interpretation, transfer syntax keyword)
REAL_US_FILES = [
    ("US1_UNCR.dcm", "RGB", "ExplicitVRLittleEndian"),
    ("US1_UNCI.dcm", "RGB", "ExplicitVRLittleEndian"),
    ("US1_J2KR.dcm", "YBR_RCT", "JPEG2000Lossless"),
    ("US1_J2KI.dcm", "YBR_ICT", "JPEG2000"),
    ("examples_ybr_color.dcm", "YBR_FULL_422", "JPEGBaseline8Bit"),
    ("color3d_jpeg_baseline.dcm", "YBR_FULL_422", "JPEGBaseline8Bit"),
    ("examples_palette.dcm", "PALETTE COLOR", "ExplicitVRLittleEndian"),
    ("OBXXXX1A.dcm", "PALETTE COLOR", "ExplicitVRLittleEndian"),
    ("OBXXXX1A_expb.dcm", "PALETTE COLOR", "ExplicitVRBigEndian"),
    ("OBXXXX1A_rle.dcm", "PALETTE COLOR", "RLELossless"),
    ("OBXXXX1A_rle_2frame.dcm", "PALETTE COLOR", "RLELossless"),
    ("gdcm-US-ALOKA-16.dcm", "PALETTE COLOR", "ImplicitVRLittleEndian"),
    ("gdcm-US-ALOKA-16_big.dcm", "PALETTE COLOR", "ExplicitVRBigEndian"),
    ("examples_rgb_color.dcm", "RGB", "ExplicitVRLittleEndian"),
]
# a real US file whose syntax (JPEG Lossless SV1) has no decoder installed here (needs gdcm or pylibjpeg)
UNSUPPORTED_US_FILE = "JPGLosslessP14SV1_1s_1f_8b.dcm"
NON_US_FILES = ["CT_small.dcm", "MR_small.dcm"]
PATIENT_MARKER = "Zzyzxpatient^Qwertina"
PATIENT_ID_MARKER = "PID-77341-XQ"


def us_file(name: str) -> Path:
    """A pydicom test file, offline (pydicom wheel or the pydicom-data package); fails clearly when missing."""
    try:
        return Path(get_testdata_file(name, download=False))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"test file {name} unavailable offline ({exc}); install the test extra (pydicom-data==1.0.0)")


def copy_with(src: Path, dst: Path, **attrs) -> Path:
    """Copy a DICOM file, overriding attributes (e.g. a marker patient name to check logs)."""
    ds = pydicom.dcmread(src)
    for key, value in attrs.items():
        setattr(ds, key, value)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def make_monochrome(dst: Path, photometric: str = "MONOCHROME2", src: str = "US1_UNCR.dcm") -> Path:
    """Grayscale US from a real RGB US file (no real MONOCHROME US file in pydicom's test data).

    MONOCHROME1 stores the inverted gray values, so both variants must decode to the same RGB image."""
    ds = pydicom.dcmread(us_file(src))
    gray = np.rint(ds.pixel_array.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 1
    if "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration
    ds.PixelData = gray.tobytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def make_jpegls(dst: Path, src: str = "US1_UNCR.dcm") -> Path:
    """JPEG-LS lossless US, transcoded from a real US file with pydicom + pyjpegls (no real JPEG-LS US file)."""
    ds = pydicom.dcmread(us_file(src))
    ds.compress(JPEGLSLossless, encoding_plugin="pyjpegls")
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def make_truncated(dst: Path, src: str = "US1_UNCR.dcm", keep: float = 0.6) -> Path:
    data = us_file(src).read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def make_short_pixel_data(dst: Path, src: str = "US1_UNCR.dcm") -> Path:
    """Well-formed file whose Pixel Data holds half the bytes the header promises (damaged at the source)."""
    ds = pydicom.dcmread(us_file(src))
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def make_no_pixel_data(dst: Path, src: str = "US1_UNCR.dcm") -> Path:
    ds = pydicom.dcmread(us_file(src))
    del ds.PixelData
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


class ThresholdSegmenter:
    """Stand-in segmentation model: label k where the gray level exceeds the k-th of evenly spaced thresholds."""

    def __init__(self, task_name: str = "busi_segmentation", version: str = "0.1.0-test") -> None:
        self.task: Task = get_task(task_name)
        self.name = task_name
        self.version = version

    def predict(self, image: np.ndarray) -> np.ndarray:
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        gray = image.mean(axis=2)
        out = np.zeros(gray.shape, np.uint8)
        n = len(self.task.labels)
        for k in range(1, n):
            out[gray > 40 + (k - 1) * (150 / max(1, n - 1))] = k
        return out


class IntensityClassifier:
    """Stand-in classifier: softmax over distances between the mean intensity and evenly spaced class centres."""

    def __init__(self, task_name: str = "busi_classification", version: str = "0.1.0-test") -> None:
        self.task: Task = get_task(task_name)
        self.name = task_name
        self.version = version

    def predict(self, image: np.ndarray) -> np.ndarray:
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        n = len(self.task.labels)
        centres = np.linspace(0, 128, n)
        logits = -np.abs(image.mean() - centres) / 10.0
        e = np.exp(logits - logits.max())
        return e / e.sum()


def require_tool(*names: str) -> None:
    """Skip locally with a reason, but fail in CI (CI=true): these tests must not silently disappear there."""
    missing = [n for n in names if shutil.which(n) is None]
    if not missing:
        return
    message = f"missing {', '.join(missing)}: apt-get install -y dcmtk dicom3tools"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def dciodvfy_errors(path: Path) -> list[str]:
    """Error lines of dicom3tools' dciodvfy (warnings are allowed; several are inherited from vendor sources)."""
    require_tool("dciodvfy")
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- hostile and oversized inputs (small on disk; what a peer or a broken scanner can send) ------------------

HOSTILE_UIDS = {
    "traversal": "../../../../tmp/tinyusfm-escape",
    "absolute": "/tmp/tinyusfm-escape-abs",
    "too-long": "1." + "2" * 70,
    "non-digit": "1.2.abc.4",
}


def make_with_uid(dst: Path, keyword: str, value: str, src: str = "US1_UNCR.dcm") -> Path:
    """A real US file whose `keyword` (SOP/Series/Study Instance UID) is replaced by `value` (header only)."""
    ds = pydicom.dcmread(us_file(src))
    setattr(ds, keyword, value)
    if keyword == "SOPInstanceUID":
        ds.file_meta.MediaStorageSOPInstanceUID = value
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=False)
    return dst


def make_relabelled_ct(dst: Path) -> Path:
    """CT_small.dcm claiming Ultrasound Image Storage (Modality stays CT): must be refused, not segmented."""
    ds = pydicom.dcmread(us_file("CT_small.dcm"))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def _us_header(rows: int, columns: int, frames: int = 1, photometric: str = "MONOCHROME2") -> pydicom.Dataset:
    """A minimal valid US header (8 bit; 3 samples for a colour photometric interpretation)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import generate_uid

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    multi = frames > 1
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1" if multi else "1.2.840.10008.5.1.4.1.1.6.1"
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["tinyusfm-test", str(rows), str(columns), str(frames)])
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["tinyusfm-test-study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["tinyusfm-test-series"])
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "US"
    ds.PatientName, ds.PatientID = "Test^Large", "LARGE-1"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1 if photometric.startswith("MONOCHROME") else 3
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if multi:
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = (0x0018, 0x1063)
        ds.FrameTime = 33.3
    return ds


def make_huge_rle(dst: Path, side: int = 20000) -> Path:
    """RLE Lossless US of side x side (default 400 Mpx, 1.2 GB as RGB) in ~6 MB: each row is runs of zeros."""
    from pydicom.encaps import encapsulate

    ds = _us_header(side, side)
    runs, rest = divmod(side, 128)
    row = b"\x81\x00" * runs + (bytes([(257 - rest) % 256, 0]) if rest > 1 else b"\x00\x00" if rest else b"")
    segment = row * side
    header = (1).to_bytes(4, "little") + (64).to_bytes(4, "little") + b"\x00" * 56
    ds.file_meta.TransferSyntaxUID = pydicom.uid.RLELossless
    ds.PixelData = encapsulate([header + segment])
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def _gray_jpeg(side: int, value: int = 90) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (side, side), value).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_huge_cine(dst: Path, frames: int = 150, side: int = 2000) -> Path:
    """JPEG Baseline US cine of `frames` x side^2 (default 150 x 4 Mpx: 1.8 GB decoded as RGB) in a few MB.

    Within the default limits: the node must process it frame by frame, not refuse it."""
    from pydicom.encaps import encapsulate

    ds = _us_header(side, side, frames)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    frame = _gray_jpeg(side)
    ds.PixelData = encapsulate([frame] * frames)
    ds["PixelData"].VR = "OB"
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def make_limit_frame(dst: Path, rows: int = 2160, columns: int = 3840) -> Path:
    """One colour JPEG frame of 3840 x 2160 (4K UHD = the default max_frame_pixels): the largest frame the node
    accepts, and the most expensive kind to decode (YBR to RGB)."""
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate

    ds = _us_header(rows, columns, photometric="YBR_FULL_422")
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    buffer = io.BytesIO()
    Image.new("RGB", (columns, rows), (90, 60, 30)).save(buffer, format="JPEG", quality=90)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def make_lying_jpeg(dst: Path, claimed: int = 13000, header: int = 512) -> Path:
    """A JPEG US whose DICOM header says header x header but whose codestream claims claimed x claimed (a
    decompression bomb: 169 Mpx from a few kB). The frame header (SOF0) is patched, the rest is a real JPEG."""
    from pydicom.encaps import encapsulate

    ds = _us_header(header, header)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    data = bytearray(_gray_jpeg(header))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = claimed.to_bytes(2, "big") * 2
    ds.PixelData = encapsulate([bytes(data)])
    ds["PixelData"].VR = "OB"
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def make_huge_jpeg(dst: Path, side: int = 13000) -> Path:
    """An honest header of side x side (169 Mpx) over a small JPEG claiming the same: refused by the limits."""
    return _honest_huge_jpeg(dst, side)


def _honest_huge_jpeg(dst: Path, side: int) -> Path:
    from pydicom.encaps import encapsulate

    ds = _us_header(side, side)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    data = bytearray(_gray_jpeg(64))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = side.to_bytes(2, "big") * 2
    ds.PixelData = encapsulate([bytes(data)])
    ds["PixelData"].VR = "OB"
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst
