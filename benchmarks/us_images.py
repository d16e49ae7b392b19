"""100 real-size ultrasound images, as PNG and as DICOM, from the real vendor files shipped offline.

Sources (all real scanner output, no synthetic pixels):
- `US1_UNCR.dcm` (pydicom-data): one 480 x 640 RGB ultrasound image;
- `pydicom.examples.palette_color`: one 350 x 800 palette-colour ultrasound image;
- `pydicom.examples.ybr_color`: a 30-frame 240 x 320 ultrasound cine (JPEG baseline).
The 100 images are: the 30 cine frames upsampled to 480 x 640, and 35 + 35 crops (70-100 % of each side)
of the two single frames resized to one of 480 x 640, 600 x 800 or 768 x 1024, the matrix sizes of cart
and workstation scanners. Each is written as an 8-bit RGB PNG and as an uncompressed US Image Storage
DICOM instance (US1_UNCR's header, new UIDs, no Sequence of Ultrasound Regions, so the reader keeps the
whole frame and both inputs give the model the same pixels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom import examples
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SIZES = ((480, 640), (600, 800), (768, 1024))  # rows, columns


def _sources() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from tinyusfm_monai.io.dicom import decode_frame

    uncr = pydicom.dcmread(get_testdata_file("US1_UNCR.dcm", download=False))
    palette = examples.palette_color
    cine = examples.ybr_color
    frames = np.stack([decode_frame(cine, i) for i in range(int(cine.NumberOfFrames))])
    return decode_frame(uncr, 0), decode_frame(palette, 0), frames


def real_size_images(n: int = 100, seed: int = 0) -> list[np.ndarray]:
    """`n` (H, W, 3) uint8 RGB ultrasound images of scanner matrix sizes (see the module docstring)."""
    rng = np.random.default_rng(seed)
    uncr, palette, frames = _sources()
    images = [np.asarray(Image.fromarray(f).resize((640, 480), Image.BILINEAR)) for f in frames][:n]
    singles = (uncr, palette)
    i = 0
    while len(images) < n:
        src = singles[i % 2]
        i += 1
        h, w = src.shape[:2]
        ch, cw = int(h * rng.uniform(0.7, 1.0)), int(w * rng.uniform(0.7, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        rows, cols = SIZES[int(rng.integers(len(SIZES)))]
        crop = Image.fromarray(np.ascontiguousarray(src[y : y + ch, x : x + cw]))
        images.append(np.asarray(crop.resize((cols, rows), Image.BILINEAR)))
    return images


def _dicom_like(template: pydicom.Dataset, rgb: np.ndarray, number: int) -> pydicom.Dataset:
    ds = template.copy()
    ds.file_meta = template.file_meta.copy()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.InstanceNumber = number
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    if "SequenceOfUltrasoundRegions" in ds:
        del ds.SequenceOfUltrasoundRegions
    return ds


def write_images(out_dir: str | Path, n: int = 100, seed: int = 0) -> tuple[Path, Path]:
    """Write `<out>/png/us_XXX.png` and `<out>/dicom/us_XXX.dcm`; returns the two folders."""
    out = Path(out_dir)
    png_dir, dcm_dir = out / "png", out / "dicom"
    png_dir.mkdir(parents=True, exist_ok=True)
    dcm_dir.mkdir(parents=True, exist_ok=True)
    template = pydicom.dcmread(get_testdata_file("US1_UNCR.dcm", download=False))
    template.SeriesInstanceUID = generate_uid()
    for k, rgb in enumerate(real_size_images(n, seed)):
        Image.fromarray(rgb).save(png_dir / f"us_{k:03d}.png")
        _dicom_like(template, rgb, k + 1).save_as(dcm_dir / f"us_{k:03d}.dcm", enforce_file_format=True)
    return png_dir, dcm_dir
