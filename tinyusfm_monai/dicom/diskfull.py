"""A full disk is a transient condition for the DICOM node: nothing acknowledged is lost, nothing is failed
for it, refused sends get 0xA700 (Out of Resources), and everything resumes by itself when space returns.

Two parts live here:

- `is_disk_full(exc)`: ENOSPC / EDQUOT anywhere in an exception's chain (pydicom, highdicom and the atomic
  writers may wrap the OSError);
- `tolerate_full_disk_on_receive()`: pynetdicom writes a received C-STORE dataset to a temporary file from its
  network thread (`STORE_RECV_CHUNKED_DATASET`); a write error there raises inside pynetdicom's reader, which
  aborts the association with a traceback instead of answering. The temporary file is wrapped so that a write
  error is remembered and the rest of the dataset discarded; the node's C-STORE handler then sees
  `receive_failed(path)` and answers 0xA700, which tells the sender to keep the instance and retry.
"""

from __future__ import annotations

import errno
import threading
from typing import Any

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

_failed: set[str] = set()
_failed_lock = threading.Lock()
_installed = False


def is_disk_full(exc: BaseException | None) -> bool:
    """True when `exc`, or an exception it was raised from or during, is an OSError for a full disk or quota."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


class _TolerantFile:
    """pynetdicom's receive file (a NamedTemporaryFile), whose writes never raise: the first error is kept and
    the path recorded in `_failed`; the remaining data of that dataset is dropped."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name = inner.name
        self.error: OSError | None = None

    def _fail(self, exc: OSError) -> None:
        if self.error is None:
            self.error = exc
            with _failed_lock:
                _failed.add(str(self.name))

    def write(self, data: bytes) -> int:
        if self.error is None:
            try:
                return self._inner.write(data)
            except OSError as exc:
                self._fail(exc)
        return len(data)

    @property
    def file(self) -> _TolerantFile:  # pynetdicom calls `.file.flush()`
        return self

    def flush(self) -> None:
        if self.error is None:
            try:
                self._inner.flush()
            except OSError as exc:
                self._fail(exc)

    def close(self) -> None:
        try:
            self._inner.close()
        except OSError as exc:
            self._fail(exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _tolerant_named_temporary_file(*args: Any, **kwargs: Any) -> _TolerantFile:
    import tempfile

    return _TolerantFile(tempfile.NamedTemporaryFile(*args, **kwargs))


def tolerate_full_disk_on_receive() -> None:
    """Install the tolerant receive file in pynetdicom (idempotent; it changes nothing while writes succeed)."""
    global _installed
    if _installed:
        return
    from pynetdicom import dimse_messages

    dimse_messages.NamedTemporaryFile = _tolerant_named_temporary_file  # type: ignore[assignment]
    _installed = True


def receive_failed(path: object) -> bool:
    """True (once) when writing the received dataset at `path` failed; the record is removed."""
    with _failed_lock:
        if str(path) in _failed:
            _failed.discard(str(path))
            return True
    return False
