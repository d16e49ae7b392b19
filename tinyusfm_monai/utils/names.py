"""How files and errors are named in logs: never by a full path.

Folders of hospital exports are often named after patients (`/data/Smith_John_1961/IMG0001.png`), also below
the folder the user passed; a log line that quotes a path leaks that name to whoever reads the logs. Files are
shown by their file name (with their position in the input list, so `IMG0001.dcm` of one folder can be told from
another's), and error texts, which readers fill with the full path, get the same replacement.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def root_cause(error: BaseException) -> str:
    """The reader's own message ("OSError: image file is truncated"), not MONAI's wrappers around it."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None:
        chain.append(current)
        current = current.__cause__
    for err in chain:
        text = str(err).strip()
        if text.startswith("applying transform"):
            continue
        return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
    return type(error).__name__


def display_name(path: Any) -> str:
    """The file name of `path`: what logs may show."""
    text = str(path)
    if not text:
        return "?"
    return Path(text).name or text


def scrub(message: str, path: Any) -> str:
    """`message` with the full path of `path` replaced by its file name, and its folders removed."""
    text = str(path)
    if not text or text == "?":
        return message
    shown = display_name(text)
    for full in sorted({text, str(Path(text).resolve())}, key=len, reverse=True):
        message = message.replace(full, shown)
    for folder in sorted({str(Path(text).parent), str(Path(text).resolve().parent)}, key=len, reverse=True):
        if folder not in (".", "/", ""):
            message = message.replace(folder + os.sep, "")
    return message
