"""The one way this project writes a file that must never be seen half-written.

Checkpoints, trained weights, DICOM results, the DICOM node's spool, pool manifests and coreset shards are all
read by another process (a resumed run, a PACS, a second rank) that must see either the old file or the whole
new one. Every such write goes through `atomic_path`: the content goes to a uniquely named temporary file in
the target folder (same file system, so the rename is atomic), is flushed to disk (`fsync`), renamed over the
target, and the rename itself is made durable by syncing the folder. A crash leaves at worst a temporary file
whose name starts with `TEMP_PREFIX`; `remove_stale_temporaries` clears those on start-up.

Permissions: the finished file gets `0o666 & ~umask` explicitly (0644 under the usual umask 022). Some writers
create their file as 0600 (anything built on `mkstemp`), which would make results unreadable to the PACS
exporter or the group that reads them; the umask of the service is what decides, as for any other file it writes.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def _current_umask() -> int:
    """The process umask (os.umask can only be read by setting it; done once, at import)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _current_umask()
DEFAULT_MODE = 0o666 & ~UMASK


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in `folder` durable (fsync the directory), where the file system allows it."""
    try:  # not every file system lets a directory be opened or synced (e.g. some network mounts)
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; when the block ends without error, it replaces `path`.

    The writer inside the block may be anything that writes to a path (`torch.save`, `np.save`,
    `Dataset.save_as`, `Path.write_text`). The temporary file keeps the target's suffix, so writers that
    choose a format by suffix (`np.save`, safetensors) behave as for the real name. On error the temporary
    file is removed and the target is untouched.

    Args:
        path: the final file.
        durable: fsync the file and its folder (default). False only for scratch files that may be lost.
        mode: permissions of the final file (default `0o666 & ~umask`).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{target.name}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{target}: the writer produced no file")
        os.chmod(tmp, DEFAULT_MODE if mode is None else mode)
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, target)
        if durable:
            fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike, data: bytes | str, durable: bool = True, mode: int | None = None) -> Path:
    """Write `data` (bytes, or text as UTF-8) to `path` atomically; returns `path`."""
    with atomic_path(path, durable, mode) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def remove_stale_temporaries(
    folder: str | os.PathLike, older_than_s: float = 3600.0, recursive: bool = False
) -> list[Path]:
    """Delete temporary files that a killed writer left in `folder` (and its subfolders when `recursive`);
    returns what was removed.

    Only files named by `atomic_path` and older than `older_than_s` are touched, so a write in progress in
    another process is never removed. Symbolic links to folders are not followed.
    """
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    limit = time.time() - older_than_s
    folders = [folder]
    if recursive:
        folders += [Path(d) / n for d, names, _ in os.walk(folder) for n in names]
    for current in folders:
        try:
            children = list(current.iterdir())
        except OSError:
            continue
        for p in children:
            try:
                if p.name.startswith(TEMP_PREFIX) and p.is_file() and not p.is_symlink() and p.stat().st_mtime < limit:
                    p.unlink()
                    removed.append(p)
            except OSError:
                continue
    return removed
