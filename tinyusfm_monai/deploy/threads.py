"""CPU thread count for inference: one compute thread per physical core that is idle at start-up.

Hyper-threads share the vector units that GEMMs saturate, so a second thread per core mostly adds
contention; PyTorch and ONNX Runtime should use the same number, or a comparison measures their
defaults instead of their kernels.

On a busy machine (an ultrasound cart also runs the scanner software) PyTorch's OpenMP threads are
far worse than fewer threads: they spin at every barrier, and a descheduled thread stalls the others
for a time slice. `benchmarks/threads.py` on the 2-core development machine, TinyUSFM eager, batch 1:
idle, 2 threads 36-52 ms and 1 thread 63-67 ms; with 2 busy background processes, 2 threads 240-1400 ms
and 1 thread 93-139 ms. `OMP_WAIT_POLICY=PASSIVE` (must be set before Python starts) removes the stall
under load but doubles idle latency (87-113 ms), so it is advice for shared machines, not a default.

Hence `inference_threads` counts the cores that are busy *now* (CPU time of other processes over a
short /proc/stat sample; the 1-minute load average lags by a minute and kept counting the previous
job) and uses the rest. `TINYUSFM_NUM_THREADS` or an explicit count overrides the guess.
"""

from __future__ import annotations

import functools
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


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields[:8])


def busy_cpus(sample_s: float = 0.25) -> float:
    """Logical CPUs kept busy by other processes right now (this one sleeps while sampling)."""
    import time

    try:
        idle0, total0 = _cpu_times()
        time.sleep(sample_s)
        idle1, total1 = _cpu_times()
        if total1 > total0:
            return (1.0 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return 0.0


def inference_threads(threads: int | None = None) -> int:
    """Threads for inference: `threads`, else $TINYUSFM_NUM_THREADS, else physical cores not busy now (>= 1).

    The automatic choice is made once per process (the CPU is sampled for 0.25 s) and reused: a second runtime
    in the same process (ONNX Runtime, OpenVINO) or a server that builds its inferer per request (MONAI Label)
    gets the same count without sampling again.
    """
    env = os.environ.get("TINYUSFM_NUM_THREADS", "").strip()
    if not threads and env and not env.isdigit():
        raise ValueError(f"TINYUSFM_NUM_THREADS={env!r}: expected a whole number of threads (0 = automatic)")
    requested = threads or int(env or 0)
    if requested > 0:
        return requested
    return _automatic_threads()


@functools.lru_cache(maxsize=1)
def _automatic_threads() -> int:
    cores = physical_cores()
    busy_logical = busy_cpus()
    # busy logical CPUs -> busy physical cores (hyper-threads: two logical CPUs per core)
    busy = int(busy_logical * cores / (os.cpu_count() or cores) + 0.5)
    return max(1, cores - busy)


def configure_inference_threads(threads: int | None = None, torch_threads: int | None = None) -> int:
    """The bundles' start-up thread setting: returns `inference_threads(threads)` (the model's threads) and gives
    torch that many, or `torch_threads` when torch only runs the pre/postprocessing (the ONNX Runtime and
    OpenVINO overlays set 1: the model's runtime gets the cores, and torch's OpenMP threads cannot stall at their
    barriers when other processes take a core; see benchmarks/RESULTS.md)."""
    import logging

    n = inference_threads(threads)
    configure_threads(torch_threads or n)
    logging.getLogger(__name__).info(
        "threads: model %d, torch %d (%d physical cores)", n, torch_threads or n, physical_cores()
    )
    return n
