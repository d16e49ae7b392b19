"""Where the time of one TinyUSFM / USFM forward goes on this CPU: per-layer counters, per runtime and precision.

Answers "why is this backend not faster" with the profilers' own numbers:

1. OpenVINO `PERF_COUNT` (benchmark_app's per-layer report), summed by layer type and kernel, for each model x
   precision (f32, bf16 where the CPU has it, NNCF INT8 calibrated on random inputs: its speed does not depend on
   the calibration images). "Subgraph" is a fused snippet: in a ViT, the attention (ScaledDotProductAttention)
   of one block.
2. The PyTorch profiler (eager fp32), summed by operator: matrix products (aten::addmm / linear / bmm) against
   attention, normalisation, element-wise and layout operators.
3. A roofline for the Linear layers alone: their FLOPs and weight bytes against the measured time.

    python benchmarks/profile_layers.py                       # TinyUSFM + USFM, classification + segmentation
    python benchmarks/profile_layers.py --models tinyusfm --kinds classification --top 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import MODEL_NAMES, TASKS, _build  # noqa: E402 - the same networks as benchmarks/inference.py


def _median_ms(fn: Any, runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def openvino_rows(net: torch.nn.Module, threads: int, runs: int, route: str) -> list[dict[str, Any]]:
    from tinyusfm_monai.deploy import openvino as ovd

    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    model = ovd.convert_network(net, 224, route=route)
    calibration = [np.random.default_rng(i).standard_normal((1, 3, 224, 224)).astype(np.float32) for i in range(16)]
    variants = [(f"OpenVINO {p}", model, p) for p in ovd.cpu_precisions()]
    variants.append(("OpenVINO INT8", ovd.quantize_int8(model, calibration, 16), "f32"))
    rows = []
    for name, m, precision in variants:
        request = ovd.compile_openvino(m, precision, threads).create_infer_request()
        wall = _median_ms(lambda r=request: r.infer([x]), runs)
        layers = ovd.layer_times(ovd.compile_openvino(m, precision, threads, perf_count=True), x, runs=runs)
        rows.append({"variant": name, "wall_ms": wall, "layers": layers})
    return rows


def torch_rows(net: torch.nn.Module, runs: int) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        wall = _median_ms(lambda: net(x), runs)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                net(x)
    ops = []
    for e in prof.key_averages():
        ops.append({"op": e.key, "calls": e.count // runs, "ms": e.self_cpu_time_total / 1e3 / runs})
    ops.sort(key=lambda r: -r["ms"])
    return {"wall_ms": wall, "ops": ops}


def linear_roofline(net: torch.nn.Module, ms: float) -> str:
    """FLOPs and bytes of the Linear layers (tokens x weights) and what rate the measured time implies."""
    tokens = 197
    flops = sum(2 * tokens * m.in_features * m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear))
    weight_bytes = sum(4 * m.weight.numel() for m in net.modules() if isinstance(m, torch.nn.Linear))
    return (
        f"Linear layers: {flops / 1e9:.2f} GFLOP and {weight_bytes / 2**20:.1f} MiB of fp32 weights per image; "
        f"in {ms:.2f} ms that is {flops / ms / 1e6:.0f} GFLOP/s and {weight_bytes / ms / 1e6:.1f} GB/s of weights"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=list(MODEL_NAMES))
    parser.add_argument("--kinds", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--threads", type=int, default=0, help="default: physical cores")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--top", type=int, default=10, help="rows per table")
    parser.add_argument("--route", default="torch", choices=("torch", "onnx"), help="OpenVINO conversion route")
    args = parser.parse_args()

    from tinyusfm_monai.deploy import configure_threads, physical_cores
    from tinyusfm_monai.deploy import openvino as ovd

    threads = args.threads or physical_cores()
    configure_threads(threads)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"# Per-layer profiles, batch 1, 224 x 224, {threads} threads, OpenVINO {ovd.version()}, torch {torch.__version__}"
    )
    print(f"load average at start (1/5/15 min): {load}")
    for kind in args.kinds:
        for model in args.models:
            torch.manual_seed(0)
            net = _build(model, kind)
            title = f"{kind} {MODEL_NAMES[model]}"
            for row in openvino_rows(net, threads, args.runs, args.route):
                total = sum(r["ms"] for r in row["layers"])
                print(f"\n### {title}, {row['variant']}: {row['wall_ms']:.2f} ms wall, {total:.2f} ms in layers\n")
                print("| layer type | kernel | nodes | ms | share |")
                print("|---|---|---:|---:|---:|")
                for r in row["layers"][: args.top]:
                    print(f"| {r['node_type']} | {r['kernel']} | {r['nodes']} | {r['ms']:.2f} | {r['share']:.1%} |")
            eager = torch_rows(net, args.runs)
            total = sum(r["ms"] for r in eager["ops"])
            print(f"\n### {title}, PyTorch eager fp32: {eager['wall_ms']:.2f} ms wall, {total:.2f} ms in operators\n")
            print("| operator | calls | ms | share |")
            print("|---|---:|---:|---:|")
            for r in eager["ops"][: args.top]:
                print(f"| {r['op']} | {r['calls']} | {r['ms']:.2f} | {r['ms'] / total:.1%} |")
            linear_ms = sum(r["ms"] for r in eager["ops"] if r["op"] in ("aten::addmm", "aten::mm", "aten::linear"))
            if model == "tinyusfm" or kind == "classification":
                print("\n" + linear_roofline(net, max(linear_ms, 1e-6)) + " (eager, aten::addmm/mm)")
    print(f"\nload average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
