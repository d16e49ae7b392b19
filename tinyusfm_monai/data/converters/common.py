"""What the segmentation-source readers share on top of `tinyusfm_monai.data.raw_io`.

`raw_io` decodes 2D image files; this adds what those layouts also need: folder discovery by the publisher's
folder names, polygon filling for outline annotations, ITK volumes (MetaImage, NIfTI) read once and sliced per
frame, and error messages that name the file even when it is not the sample's image.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from tinyusfm_monai.data import raw_io
from tinyusfm_monai.data.converters.base import SampleError
from tinyusfm_monai.io.formats import PIL, SUFFIXES

safe_id = raw_io.safe_id


def files_with_suffix(folder: Path, suffixes: Sequence[str] = SUFFIXES[PIL], recursive: bool = False) -> list[Path]:
    """Files by (multi-part) suffix such as `.nii.gz`, sorted so ids never depend on the listing order."""
    if not folder.is_dir():
        return []
    wanted = tuple(s.lower() for s in suffixes)
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    found = [p for p in candidates if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(wanted)]
    return sorted(found, key=lambda p: raw_io.natural_key(p.relative_to(folder).as_posix()))


def find_dirs(src: Path, name: str, max_depth: int = 4) -> list[Path]:
    """Folders called `name` (any case) under src, shallowest first: archives unpack with or without a wrapper."""
    return [d for d in raw_io.walk_dirs(Path(src), max_depth) if d.name.lower() == name.lower()]


def require_dir(src: Path, name: str) -> Path:
    """The shallowest folder called `name`; its absence means a wrong --src, not a per-file problem."""
    found = find_dirs(src, name)
    if not found:
        raise FileNotFoundError(f"no folder named {name!r} under {src}; is --src the unpacked dataset?")
    return found[0]


def find_file(src: Path, name: str, max_depth: int = 4) -> Path | None:
    """The shallowest file called `name` (any case) under src."""
    for folder in raw_io.walk_dirs(Path(src), max_depth):
        found = raw_io.child(folder, name)
        if found is not None and found.is_file():
            return found
    return None


def _naming(path: Path, read):
    try:
        return read(path)
    except SampleError as exc:
        raise SampleError(f"{path}: {exc}") from exc


def read_image(path: Path) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8, rows = image rows (PIL's order, the official pipeline's)."""
    return _naming(path, raw_io.read_image)


def binary_mask(path: Path) -> np.ndarray:
    """0/1 from 0/1, 0/255 or JPEG-compressed masks."""
    return _naming(path, raw_io.binary_mask)


def label_mask(path: Path) -> np.ndarray:
    """A multi-class mask file whose grey values already are the label values."""
    return _naming(path, raw_io.read_mask_gray)


def as_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    """uint8 from a volume slice holding 8-bit values in another type (NIfTI often stores them as floats).

    Anything else (fractions, negative or >255 values) means a file this reader does not understand, not data to
    rescale, so it is reported.
    """
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.integer) and not np.array_equal(array, np.round(array)):
        raise SampleError(f"{path}: non-integer pixel values")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise SampleError(f"{path}: values outside 0..255")
    return array.astype(np.uint8)


def rasterise_polygons(
    polygons: Iterable[Sequence[tuple[float, float]]],
    shape: tuple[int, int],
    value: int = 1,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Fill (x, y) outlines into an (H, W) uint8 map, boundary included; later outlines overwrite earlier ones."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(out.astype(np.uint8) if out is not None else np.zeros(shape, np.uint8))
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        points = [(float(x), float(y)) for x, y in polygon]
        if len(points) >= 3:
            draw.polygon(points, fill=value, outline=value)
        elif points:
            draw.line(points + points[-1:], fill=value)
    return np.asarray(canvas).copy()


def itk_header_size(path: Path) -> tuple[int, ...]:
    """Array shape (slowest axis first) from the header alone, so listing a sequence does not decode it."""
    import itk

    try:
        io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
        if io is None:
            raise RuntimeError("no ITK reader recognises this file")
        io.SetFileName(str(path))
        io.ReadImageInformation()
        dims = [int(io.GetDimensions(i)) for i in range(io.GetNumberOfDimensions())]
    except Exception as exc:  # ITK raises RuntimeError or its own types
        raise SampleError(f"{path}: cannot read the header ({exc})") from exc
    return tuple(reversed(dims))


@lru_cache(maxsize=4)
def read_itk(path: Path) -> np.ndarray:
    """Pixels in ITK's (..., row, column) order: rows are the stored image rows, nothing flipped.

    Cached because sequence readers hand out one frame at a time and the pipeline asks for the image and the
    mask of a frame back to back; read-only so a cached volume cannot be altered through a returned frame.
    """
    import itk

    try:
        array = itk.array_from_image(itk.imread(str(path)))
    except Exception as exc:
        raise SampleError(f"{path}: cannot read ({exc})") from exc
    array.setflags(write=False)
    return array
