"""File-format detection: the one table of suffixes and the one decision of which reader gets a file.

Every part that lists or opens input images (bundle inference, the distillation pool, the DICOM batch, the
dataset converters) asks this module, so "which files are images" has one answer. DICOM is recognised by
content first (the 'DICM' marker after the 128-byte preamble): scanners and PACS write files without a suffix,
and some vendor files carry a TIFF header in the preamble (dual TIFF/DICOM) that a suffix- or
magic-based image library would decode as a plain TIFF, losing the tissue crop and the DICOM identity.
"""

from __future__ import annotations

import os
from pathlib import Path

DICOM = "dicom"
PIL = "pil"  # 2D raster images decoded by Pillow
ITK = "itk"  # NIfTI / MetaImage / NRRD, decoded by ITK

#: suffixes of each format (lower case); a file without a suffix is DICOM when its content says so
SUFFIXES: dict[str, tuple[str, ...]] = {
    DICOM: (".dcm", ".dicom", ".dic"),
    PIL: (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"),
    ITK: (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr"),
}
ALL_SUFFIXES: tuple[str, ...] = tuple(s for suffixes in SUFFIXES.values() for s in suffixes)


def looks_like_dicom(path: str | os.PathLike) -> bool:
    """True when the file has the DICOM preamble marker ('DICM' at byte 128)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def suffix_format(path: str | os.PathLike) -> str | None:
    """The format a file's name claims (DICOM, PIL or ITK), or None."""
    name = str(path).lower()
    for fmt, suffixes in SUFFIXES.items():
        if name.endswith(suffixes):
            return fmt
    return None


def detect_format(path: str | os.PathLike) -> str | None:
    """The reader a file goes to: DICOM by content or suffix, else by suffix; None when it is not an image."""
    if looks_like_dicom(path):
        return DICOM
    fmt = suffix_format(path)
    if fmt is not None:
        return fmt
    return None


def is_dicom(path: str | os.PathLike) -> bool:
    """DICOM by content or by suffix (a bare dataset without preamble still has a .dcm name)."""
    return detect_format(path) == DICOM


def iter_files(root: str | os.PathLike) -> list[Path]:
    """Every regular file under `root`, sorted; hidden files and folders and DICOMDIR left out.

    A single file is returned as itself. This is the input list of the DICOM batch and of folder inference.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            found.append(Path(dirpath) / name)
    return found


def list_images(root: str | os.PathLike) -> list[Path]:
    """Every file under `root` that some reader takes (`detect_format` is not None), sorted."""
    return [p for p in iter_files(root) if detect_format(p) is not None]
