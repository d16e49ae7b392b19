"""CPU thread count: one compute thread per physical core.

Hyper-threads share the vector units that GEMMs saturate, so a second thread per core mostly adds
contention; PyTorch and ONNX Runtime should use the same number, or a comparison measures their
defaults instead of their kernels.

On a busy machine (an ultrasound cart also runs the scanner software) PyTorch's OpenMP threads are
far worse than one thread: every small kernel ends in a barrier, and a descheduled thread stalls the
others for a time slice. On the 2-core development machine at load ~7, TinyUSFM eager took
2.1-5.2 s per image with 2 threads and 0.31-0.41 s with 1 (benchmarks/RESULTS.md). `inference_threads`
therefore only uses the cores that are idle at start-up. `OMP_WAIT_POLICY=PASSIVE` in the environment
(set before Python starts) removes most of the stall too.
"""

from __future__ import annotations

import os
from pathlib import Path


def physical_cores() -> int:
    """Physical cores available to this process (logical CPUs when the topology cannot be read)."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        cores = set()
        physical_id = core_id = ""
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "physical id":
                physical_id = value.strip()
            elif key == "core id":
                core_id = value.strip()
            elif not line.strip() and core_id:
                cores.add((physical_id, core_id))
                core_id = ""
        if core_id:
            cores.add((physical_id, core_id))
        return max(1, min(len(cores) or logical, logical))
    except OSError:
        return max(1, logical)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads (default: physical cores) and return the number used."""
    import torch

    n = threads or physical_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def inference_threads(max_threads: int | None = None) -> int:
    """Physical cores minus those kept busy by other processes (1-min load average), at least 1."""
    cores = min(physical_cores(), max_threads or physical_cores())
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except (OSError, AttributeError):
        busy = 0
    return max(1, min(cores, physical_cores() - busy))


def configure_inference_threads(max_threads: int | None = None) -> int:
    """`configure_threads(inference_threads())`: what the bundles' inference.json calls at start-up."""
    import logging

    n = configure_threads(inference_threads(max_threads))
    logging.getLogger(__name__).info("torch intra-op threads: %d (%d physical cores)", n, physical_cores())
    return n
