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
