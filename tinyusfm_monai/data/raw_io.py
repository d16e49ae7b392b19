"""Reading publishers' files the same way in every converter.

Publishers ship JPEG, PNG, BMP and TIFF in grey, RGB, palette and 16-bit flavours, with masks that are 0/255,
0/1 or JPEG-compressed. Converters call these helpers so that every dataset ends up with the same uint8 arrays
and every unreadable file becomes a `SampleError` that names the file instead of a crash.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tinyusfm_monai.data.converters.base import SampleError
from tinyusfm_monai.io.formats import PIL, SUFFIXES


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer) and array.size and array.min() >= 0 and array.max() <= 255:
        return array.astype(np.uint8)
    # 16-bit or float data: stretch to the full 8-bit range; ultrasound B-mode has no absolute intensity scale
    a = array.astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.round((a - lo) / (hi - lo) * 255.0).astype(np.uint8)


def read_image(path: Path) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8, rows = image height, as the file stores it (no channel fusion)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif im.mode == "LA":
                im = im.convert("L")
            array = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise SampleError(f"unreadable image ({type(exc).__name__}: {exc})") from exc
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise SampleError(f"unsupported image shape {array.shape}")
    return _to_uint8(np.ascontiguousarray(array))


def read_mask_gray(path: Path) -> np.ndarray:
    """A mask file as one (H, W) uint8 channel; colour masks collapse to their brightest channel."""
    array = read_image(path)
    return array.max(axis=2) if array.ndim == 3 else array


def binary_mask(path: Path, threshold: int = 127) -> np.ndarray:
    """0/1 mask from a 0/255 (or 0/1) file; the threshold absorbs JPEG ringing around the edges."""
    gray = read_mask_gray(path)
    if gray.max(initial=0) <= 1:
        return (gray > 0).astype(np.uint8)
    return (gray > threshold).astype(np.uint8)


def safe_id(*parts: str) -> str:
    """A stable, filesystem-safe sample id: 'benign (12)' -> 'benign_12'."""
    text = "_".join(p for p in parts if p)
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_.")


def natural_key(text: str) -> list:
    """Sort key so that '2.png' comes before '10.png'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def image_files(folder: Path) -> list[Path]:
    """Image files directly in `folder`, naturally sorted; hidden files (._*, .DS_Store) skipped."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES[PIL]]
    return sorted((p for p in files if not p.name.startswith(".")), key=lambda p: natural_key(p.name))


def child(folder: Path, name: str) -> Path | None:
    """The sub-folder or file `name` of `folder`, matched case-insensitively (archives differ in case)."""
    exact = folder / name
    if exact.exists():
        return exact
    if not folder.is_dir():
        return None
    for p in folder.iterdir():
        if p.name.lower() == name.lower():
            return p
    return None


def walk_dirs(root: Path, max_depth: int = 4) -> Iterator[Path]:
    """`root` and its sub-folders, breadth first, so the shallowest match wins when archives nest a copy."""
    level: list[Path] = [root]
    for _ in range(max_depth + 1):
        next_level: list[Path] = []
        for d in level:
            yield d
            try:
                next_level.extend(sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")))
            except OSError:
                continue
        level = next_level


def find_root(src: Path, is_root, what: str, max_depth: int = 4) -> Path:
    """The folder under `src` that `is_root` accepts: users unpack archives into one or two wrapper folders."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src} does not exist")
    for d in walk_dirs(src, max_depth):
        if is_root(d):
            return d
    raise FileNotFoundError(f"{what} not found under {src} (searched {max_depth} folder levels)")


def read_text_lines(path: Path) -> list[str]:
    """Non-empty stripped lines; tolerant of a UTF-8 BOM and of Windows or Latin-1 encodings."""
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "latin-1"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    return [line.strip() for line in text.splitlines() if line.strip()]


def first_existing(candidates: Iterable[Path]) -> Path | None:
    for c in candidates:
        if c.exists():
            return c
    return None
