"""CPU thread policy for inference: thread count x OpenMP wait policy x background load, measured.

Decides the default thread policy of the bundles' inference.json. On an ultrasound cart or a PACS
workstation the model shares the CPU with other software, and PyTorch's OpenMP threads spin at every
barrier by default, so a thread that the OS deschedules stalls the others. This script measures TinyUSFM
(and USFM for the ratio) eager batch-1 latency, each configuration in a fresh process (the wait policy
is read when OpenMP starts), while 0, 1 or `cores` busy-looping processes compete for the CPU.

    python benchmarks/threads.py               # TinyUSFM classification, ~3 min on 2 cores
    python benchmarks/threads.py --model usfm  # the same for USFM
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _spin(stop: float) -> None:
    x = 0
    while time.time() < stop:
        x += 1


def _child(model: str, kind: str, threads: int, runs: int) -> None:
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from inference import _build  # the same networks as benchmarks/inference.py

    torch.set_num_threads(threads)
    net = _build(model, kind)
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        for _ in range(3):
            net(x)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    print(json.dumps({"median_ms": statistics.median(times) * 1e3, "max_ms": max(times) * 1e3}))


def measure(model: str, kind: str, threads: int, policy: str, busy: int, runs: int) -> dict[str, float]:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    if policy.startswith("GOMP_SPINCOUNT="):
        env["GOMP_SPINCOUNT"] = policy.split("=", 1)[1]
    elif policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    spinners = [mp.Process(target=_spin, args=(time.time() + 600,), daemon=True) for _ in range(busy)]
    for p in spinners:
        p.start()
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", model, kind, str(threads), str(runs)],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=1200,
        )
    finally:
        for p in spinners:
            p.terminate()
            p.join()
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tinyusfm", choices=("tinyusfm", "usfm"))
    parser.add_argument("--kind", default="classification", choices=("classification", "segmentation"))
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument(
        "--policies",
        nargs="+",
        default=["default", "PASSIVE", "GOMP_SPINCOUNT=10000"],
        help="OpenMP wait policies: default, ACTIVE, PASSIVE or GOMP_SPINCOUNT=<n> (libgomp)",
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[], help="thread counts (default: 1 and all cores)")
    parser.add_argument("--busy", type=int, nargs="+", default=[], help="busy processes (default: 0, 1, all cores)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, kind, threads, runs = args.child
        _child(model, kind, int(threads), int(runs))
        return

    from tinyusfm_monai.deploy import physical_cores

    cores = physical_cores()
    thread_counts = args.threads or sorted({1, cores})
    loads = args.busy or sorted({0, 1, cores})
    print(f"# thread policy: {args.model} {args.kind}, eager, batch 1, 224x224, {args.runs} runs after 3 warm-up")
    print(f"{cores} physical cores, {os.cpu_count()} logical; load average at start {os.getloadavg()[0]:.2f}\n")
    print("| busy background processes | torch threads | OpenMP wait policy | median (ms) | max (ms) |")
    print("|---:|---:|---|---:|---:|")
    for busy in loads:
        for threads in thread_counts:
            for policy in args.policies:
                r = measure(args.model, args.kind, threads, policy, busy, args.runs)
                print(f"| {busy} | {threads} | {policy} | {r['median_ms']:.1f} | {r['max_ms']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
