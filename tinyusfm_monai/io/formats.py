"""File-format detection: the one table of suffixes and the one decision of which reader gets a file.

Every part that lists or opens input images (bundle inference, the distillation pool, the DICOM batch, the
dataset converters) asks this module, so "which files are images" has one answer. DICOM is recognised by
content first (the 'DICM' marker after the 128-byte preamble): scanners and PACS write files without a suffix,
and some vendor files carry a TIFF header in the preamble (dual TIFF/DICOM) that a suffix- or
magic-based image library would decode as a plain TIFF, losing the tissue crop and the DICOM identity.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Entry:
    """One thing found below an input folder: a regular file to read (`problem` empty), or something that is
    not read, with the reason in words (`problem`), so that callers report it instead of dropping it."""

    path: Path
    problem: str = ""


def _classify(path: Path) -> str:
    """'' for a regular file or a symlink to one; otherwise why it is not read. Uses lstat/stat only: a FIFO
    or a device is never opened (opening a FIFO blocks until a writer appears)."""
    try:
        link = os.lstat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    if stat.S_ISREG(link.st_mode):
        return ""
    if stat.S_ISLNK(link.st_mode):
        try:
            target = os.stat(path)  # follows the link; ELOOP for a loop, ENOENT for a dangling link
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "symbolic link loop"
            return f"broken symbolic link ({exc.strerror or type(exc).__name__})"
        if stat.S_ISREG(target.st_mode):
            return ""
        return f"symbolic link to a {file_kind(target.st_mode)} (not followed)"
    return f"{file_kind(link.st_mode)}, not a regular file"


def file_kind(mode: int) -> str:
    """'folder', 'FIFO (named pipe)', 'socket', ... for a stat mode: how reports name what is not read."""
    for test, name in (
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "FIFO (named pipe)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def iter_entries(root: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[Entry]:
    """Everything below `root`, sorted, each a regular file or an `Entry` with the reason it is not read.

    Never follows a symbolic link to a folder (no loops, no walking out of the export); links to regular
    files are read. Hidden files and folders (names starting with '.') are listed as not read, without
    looking inside them; `exclude` (e.g. an output folder inside the input) is left out entirely.
    """
    root = Path(root)
    problem = _classify(root)
    if not problem or not root.is_dir() or root.is_symlink():
        return [Entry(root, problem)]
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[Entry] = []

    def unreadable(error: OSError) -> None:
        found.append(Entry(Path(error.filename or root), f"folder cannot be read ({error.strerror})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        folder = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            path = folder / name
            if skip is not None and path.resolve() == skip:
                continue
            if name.startswith("."):
                found.append(Entry(path, "hidden folder (not searched)"))
            elif path.is_symlink():
                found.append(Entry(path, _classify(path) or "symbolic link to a folder (not followed)"))
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            path = folder / name
            if name.startswith("."):
                found.append(Entry(path, "hidden file"))
            else:
                found.append(Entry(path, _classify(path)))
    return sorted(found, key=lambda e: str(e.path))


def iter_files(root: str | os.PathLike) -> list[Path]:
    """Every regular file under `root` (or symlink to one), sorted; hidden files and folders left out.

    A single file is returned as itself. FIFOs, devices, sockets, symlink loops and links to folders are never
    returned (use `iter_entries` to report them).
    """
    return [e.path for e in iter_entries(root) if not e.problem]


def list_images(root: str | os.PathLike) -> list[Path]:
    """Every file under `root` that some reader takes (`detect_format` is not None), sorted."""
    return [p for p in iter_files(root) if detect_format(p) is not None]
