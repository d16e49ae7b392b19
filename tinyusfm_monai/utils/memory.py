"""The process's own peak memory, for status files and benchmarks.

Why not ``resource.getrusage(RUSAGE_SELF).ru_maxrss``: on Linux it survives ``fork`` and ``execve``, so a node
started from a large parent (a test runner that has loaded models, a supervisor) reports the parent's peak as
its own. ``VmHWM`` in ``/proc/self/status`` belongs to the current address space and starts afresh at exec.
"""

from __future__ import annotations

import resource
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (VmHWM; ru_maxrss where /proc is missing)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0


def current_rss_mib() -> float:
    """Resident set size now, in MiB (0 where /proc is missing)."""
    return (_status_kib("VmRSS") or 0) / 1024.0
