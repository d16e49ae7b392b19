"""CPU inference benchmark: TinyUSFM vs USFM, PyTorch eager / TorchScript / ONNX Runtime (+ INT8), and the bundles.

One command, three tables:

1. Per-model: latency at batch 1 (median and p90 over N runs after warm-up), throughput at the best of a
   few batch sizes, and peak memory, for classification (backbone + linear head) and segmentation (FPN
   segmenter) at 224 x 224, TinyUSFM and USFM side by side, for PyTorch eager, TorchScript (scripted and
   frozen) and ONNX Runtime (CPU EP); TinyUSFM also as INT8 (ONNX Runtime dynamic quantisation and
   torch.ao dynamic quantisation). Every variant runs in a fresh subprocess, so its peak RSS (`VmHWM`) is
   its own; "peak RSS" includes the interpreter and imports, "model RSS" is VmHWM minus VmRSS after imports.
2. TinyUSFM/USFM ratios, next to the FLOP ratio (paper convention, `networks.profile.count_flops`).
3. End to end: `python -m monai.bundle run --config_file bundles/<task>/configs/inference.json` on 100
   real-size ultrasound images (PNG and DICOM, `benchmarks/us_images.py`), with PyTorch (inference.json)
   and with ONNX Runtime (+ inference_onnx.json), as a real command (wall time) and as an instrumented run
   of the same configs in a fresh process: start-up (interpreter, imports, config, network, weights),
   loading/preprocessing (dataloader), model (the inferer: network forward or ONNX Runtime session) and
   the rest (postprocessing, writing results). The bundles get a `model.pt` of a randomly initialised
   network and its ONNX export (right shapes; timing does not depend on the weight values).

    python benchmarks/inference.py            # default, ~15 min on 2 idle cores
    python benchmarks/inference.py --quick    # fewer runs, 20 images, ~3 min
    python benchmarks/inference.py --full     # more runs, larger batches
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TASKS = {"classification": ("busi_classification", 3), "segmentation": ("busi_segmentation", 2)}
MODELS = ("tinyusfm", "usfm")
BACKENDS = ("eager", "torchscript", "onnx")
INT8_BACKENDS = ("onnx-int8", "eager-int8")  # TinyUSFM only
MODEL_NAMES = {"tinyusfm": "TinyUSFM", "usfm": "USFM"}
PROFILES = {
    "quick": {"runs": 8, "warmup": 2, "budget": 6.0, "batches": (1, 4), "images": 20},
    "default": {"runs": 20, "warmup": 3, "budget": 12.0, "batches": (1, 4, 8), "images": 100},
    "full": {"runs": 50, "warmup": 5, "budget": 40.0, "batches": (1, 4, 8, 16), "images": 100},
}


# ----------------------------------------------------------------------------------------------- helpers


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _build(model: str, kind: str, image_size: int = 224) -> Any:
    from tinyusfm_monai.networks import ViTSegmenter, build_backbone

    classes = TASKS[kind][1]
    if kind == "segmentation":
        return ViTSegmenter(model, num_classes=classes, img_size=image_size).eval()
    return build_backbone(model, num_classes=classes, img_size=image_size).eval()


def _run_child(args: list[str], timeout: float = 1800) -> dict[str, Any]:
    """Run this script in a fresh interpreter; its last stdout line is JSON."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _timed_runs(fn: Callable[[], Any], warmup: int, runs: int, budget: float, min_runs: int = 3) -> list[float]:
    """Seconds per call: `warmup` untimed calls, then up to `runs` calls or until `budget` s (at least `min_runs`)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs and (len(times) < min_runs or time.perf_counter() - start < budget):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def machine_description(threads: int) -> str:
    import onnxruntime
    import torch

    from tinyusfm_monai.deploy import physical_cores

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {cpu}, {os.cpu_count()} logical CPUs, {physical_cores()} physical cores{mem}; "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}\n"
        f"torch {torch.__version__} (intra-op threads used: {threads}; default {torch.get_num_threads()}), "
        f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider, intra-op threads {threads})\n"
        f"load average at start (1/5/15 min): {load}"
    )


# ---------------------------------------------------------------------------------------- model variants


def prepare_artifacts(work: Path) -> dict[str, Any]:
    """Child: write weights, TorchScript and ONNX (fp32 and int8) files for every model/kind; returns FLOPs."""
    import torch

    from tinyusfm_monai.deploy import export_onnx, quantize_onnx_int8
    from tinyusfm_monai.networks.profile import count_flops

    flops: dict[str, float] = {}
    for kind in TASKS:
        for model in MODELS:
            torch.manual_seed(0)
            net = _build(model, kind)
            stem = work / f"{model}_{kind}"
            torch.save(net.state_dict(), f"{stem}.pt")
            with torch.no_grad():
                torch.jit.freeze(torch.jit.script(net)).save(f"{stem}.ts")
            export_onnx(net, f"{stem}.onnx")
            if model == "tinyusfm":
                quantize_onnx_int8(f"{stem}.onnx", f"{stem}_int8.onnx")
            flops[f"{model}_{kind}"] = count_flops(net, 224) / 1e9
    return {"gflops": flops}


def measure_variant(
    work: Path, model: str, kind: str, backend: str, cfg: dict[str, Any], threads: int
) -> dict[str, Any]:
    """Child: load one variant, measure latency, throughput and memory."""
    import numpy as np
    import torch

    from tinyusfm_monai.deploy import configure_threads, onnx_session, quantize_linear_dynamic
    from tinyusfm_monai.deploy.onnx import run_onnx

    configure_threads(threads)
    base_kib = _status_kib("VmRSS")
    stem = work / f"{model}_{kind}"
    if backend.startswith("onnx"):
        session = onnx_session(f"{stem}{'_int8' if backend == 'onnx-int8' else ''}.onnx", threads)

        def run(x: torch.Tensor) -> Any:
            return run_onnx(session, x.numpy())

    else:
        if backend == "torchscript":
            net = torch.jit.load(f"{stem}.ts", map_location="cpu")
        else:
            net = _build(model, kind)
            net.load_state_dict(torch.load(f"{stem}.pt", map_location="cpu", weights_only=True))
            if backend == "eager-int8":
                net = quantize_linear_dynamic(net, inplace=True)

        def run(x: torch.Tensor) -> Any:
            with torch.inference_mode():
                return net(x)

    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(1, 3, 224, 224, generator=gen)
    lat = _timed_runs(lambda: run(x1), cfg["warmup"], cfg["runs"], cfg["budget"])
    throughput = {1: 1.0 / statistics.median(lat)}
    for b in cfg["batches"]:
        if b == 1:
            continue
        xb = torch.randn(b, 3, 224, 224, generator=gen)
        times = _timed_runs(lambda xb=xb: run(xb), 1, max(2, cfg["runs"] // 4), cfg["budget"] / 2, min_runs=2)
        throughput[b] = b / statistics.median(times)
    best = max(throughput, key=throughput.get)
    out = np.asarray(run(x1) if backend.startswith("onnx") else run(x1).float())
    return {
        "median_ms": statistics.median(lat) * 1e3,
        "p90_ms": _percentile(lat, 0.9) * 1e3,
        "runs": len(lat),
        "throughput": throughput[best],
        "best_batch": best,
        "peak_rss_mib": _status_kib("VmHWM") / 1024,
        "model_rss_mib": (_status_kib("VmHWM") - base_kib) / 1024,
        "finite": bool(np.isfinite(out).all()),
    }


def model_tables(cfg: dict[str, Any], threads: int, work: Path) -> list[dict[str, Any]]:
    print("\nexporting TorchScript / ONNX / ONNX-int8 artifacts (not timed) ...", flush=True)
    t = time.perf_counter()
    cached = work / "gflops.json"  # artifacts of an earlier run with the same --work are reused
    if cached.is_file():
        flops = json.loads(cached.read_text())
    else:
        flops = _run_child(["--child", "prepare", "--work", str(work)])["gflops"]
        cached.write_text(json.dumps(flops))
    print(f"  done in {time.perf_counter() - t:.0f} s", flush=True)
    rows = []
    for kind in TASKS:
        for model in MODELS:
            backends = BACKENDS + (INT8_BACKENDS if model == "tinyusfm" else ())
            for backend in backends:
                spec = json.dumps({"model": model, "kind": kind, "backend": backend, "cfg": cfg, "threads": threads})
                res = _run_child(["--child", "measure", "--work", str(work), "--spec", spec])
                res.update(model=model, kind=kind, backend=backend, gflops=flops[f"{model}_{kind}"])
                rows.append(res)
                print(
                    f"  {kind:14s} {MODEL_NAMES[model]:8s} {backend:11s} {res['median_ms']:8.1f} ms "
                    f"(uptime load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
    return rows


def print_model_tables(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> None:
    batches = "/".join(str(b) for b in cfg["batches"])
    print(
        f"\n## Per-model CPU inference at 224x224 (batch-1 latency over up to {cfg['runs']} runs; throughput: best of batch {batches})\n"
    )
    print(
        "| task | model | backend | GFLOPs | latency median (ms) | p90 (ms) | throughput (img/s) @batch | peak RSS (MiB) | model RSS (MiB) |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['kind']} | {MODEL_NAMES[r['model']]} | {r['backend']} | {r['gflops']:.2f} | {r['median_ms']:.1f} | "
            f"{r['p90_ms']:.1f} | {r['throughput']:.1f} @{r['best_batch']} | {r['peak_rss_mib']:.0f} | {r['model_rss_mib']:.0f} |"
        )
    index = {(r["kind"], r["model"], r["backend"]): r for r in rows}
    print("\n## TinyUSFM / USFM ratios (same task, same backend)\n")
    print(
        "| task | backend | FLOP ratio | latency ratio | speed-up | throughput speed-up | model-RSS ratio | latency ratio / FLOP ratio |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for kind in TASKS:
        for backend in BACKENDS:
            t, u = index.get((kind, "tinyusfm", backend)), index.get((kind, "usfm", backend))
            if not t or not u:
                continue
            flop = t["gflops"] / u["gflops"]
            lat = t["median_ms"] / u["median_ms"]
            print(
                f"| {kind} | {backend} | {flop:.2%} | {lat:.2%} | {1 / lat:.1f}x | {t['throughput'] / u['throughput']:.1f}x | "
                f"{t['model_rss_mib'] / max(u['model_rss_mib'], 1e-9):.2f} | {lat / flop:.2f} |"
            )
    print("\n## TinyUSFM INT8 vs fp32 (same task)\n")
    print(
        "| task | int8 backend | latency (ms) | vs fp32 ONNX | vs fp32 eager | vs USFM fp32 ONNX | throughput (img/s) | model RSS (MiB) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for kind in TASKS:
        for backend in INT8_BACKENDS:
            r = index.get((kind, "tinyusfm", backend))
            if not r:
                continue
            onnx_fp32, eager_fp32 = index[(kind, "tinyusfm", "onnx")], index[(kind, "tinyusfm", "eager")]
            usfm = index[(kind, "usfm", "onnx")]
            print(
                f"| {kind} | {backend} | {r['median_ms']:.1f} | {onnx_fp32['median_ms'] / r['median_ms']:.2f}x | "
                f"{eager_fp32['median_ms'] / r['median_ms']:.2f}x | {usfm['median_ms'] / r['median_ms']:.1f}x | "
                f"{r['throughput']:.1f} | {r['model_rss_mib']:.0f} |"
            )


# ----------------------------------------------------------------------------------------------- bundles


def prepare_bundles(work: Path, n_images: int, source: Path, onnx: bool) -> dict[str, Path]:
    """Copies of the two task bundles (configs from `source`) with a random-init model.pt (and its ONNX
    export for the inference_onnx.json overlay), and the images."""
    import torch

    from tinyusfm_monai.deploy.export import export

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from us_images import write_images

    paths: dict[str, Path] = {}
    for kind, (task, _) in TASKS.items():
        dst = work / "bundles" / task
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(source / task / "configs", dst / "configs")
        (dst / "models").mkdir(parents=True)
        torch.manual_seed(0)
        torch.save(_build("tinyusfm", kind).state_dict(), dst / "models" / "model.pt")
        if onnx:
            export(str(dst), format="onnx")
        paths[kind] = dst
    images = work / "images"
    marker = images / f".{n_images}"
    if marker.is_file():  # reuse the images of an earlier run with --work
        png, dcm = images / "png", images / "dicom"
    else:
        png, dcm = write_images(images, n=n_images)
        marker.touch()
    paths["png"], paths["dicom"] = png, dcm
    return paths


def instrumented_run(
    bundle: Path, configs: list[str], images: Path, out: Path, t0: float, overrides: dict[str, Any]
) -> dict[str, Any]:
    """Child: the bundle's inference config run in this process, with timers around the dataloader and the inferer."""
    from ignite.engine import Events
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / c) for c in configs])
    parser["bundle_root"] = str(bundle)
    parser["dataset_dir"] = str(images)
    parser["output_dir"] = str(out)
    for key, value in overrides.items():
        parser[key] = value
    if "initialize" in parser:
        parser.get_parsed_content("initialize")  # as `monai.bundle run` does before "run"
    evaluator = parser.get_parsed_content("evaluator")
    timers = {"data": 0.0, "model": 0.0, "iteration": 0.0}
    marks: dict[str, float] = {}

    def mark(name: str) -> Callable[..., None]:
        def handler(*_: Any) -> None:
            marks[name] = time.perf_counter()

        return handler

    def add(name: str, start: str, end: str) -> Callable[..., None]:
        def handler(*_: Any) -> None:
            timers[name] += marks[end] - marks[start]

        return handler

    evaluator.add_event_handler(Events.GET_BATCH_STARTED, mark("batch_start"))
    evaluator.add_event_handler(Events.GET_BATCH_COMPLETED, mark("batch_end"))
    evaluator.add_event_handler(Events.GET_BATCH_COMPLETED, add("data", "batch_start", "batch_end"))
    evaluator.add_event_handler(Events.ITERATION_STARTED, mark("iter_start"))
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, mark("iter_end"))
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, add("iteration", "iter_start", "iter_end"))
    inferer = evaluator.inferer  # the model time is the inferer's (PyTorch network or ONNX Runtime session)

    def timed_inferer(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        result = inferer(*args, **kwargs)
        timers["model"] += time.perf_counter() - t
        return result

    evaluator.inferer = timed_inferer
    started = time.time()
    t = time.perf_counter()
    evaluator.run()
    run_s = time.perf_counter() - t
    import torch

    n = len(parser.get_parsed_content("datalist"))
    # ITERATION_STARTED fires after the batch is fetched, so iteration = model + transfer + postprocessing.
    return {
        "startup_s": started - t0,
        "data_s": timers["data"],
        "model_s": timers["model"],
        "post_s": timers["iteration"] - timers["model"],
        "run_s": run_s,
        "total_s": time.time() - t0,
        "images": n,
        "threads": torch.get_num_threads(),
    }


BUNDLE_CONFIGS = {"pytorch": ["inference.json"], "onnx": ["inference.json", "inference_onnx.json"]}


def bundle_tables(
    paths: dict[str, Path], work: Path, overrides: dict[str, Any], real_cli: bool, backends: list[str]
) -> list[dict[str, Any]]:
    rows = []
    extra = [a for k, v in overrides.items() for a in (f"--{k}", json.dumps(v) if not isinstance(v, str) else v)]
    for kind, (task, _) in TASKS.items():
        for backend, fmt in itertools.product(backends, ("png", "dicom")):
            configs = BUNDLE_CONFIGS[backend]
            row: dict[str, Any] = {"task": task, "backend": backend, "format": fmt}
            if real_cli:
                out = work / "out" / f"{task}_{backend}_{fmt}_cli"
                files = [str(paths[kind] / "configs" / c) for c in configs]
                config_arg = files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"
                cmd = [
                    sys.executable,
                    "-m",
                    "monai.bundle",
                    "run",
                    "--config_file",
                    config_arg,
                    "--dataset_dir",
                    str(paths[fmt]),
                    "--output_dir",
                    str(out),
                    *extra,
                ]
                t = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                row["cli_wall_s"] = time.perf_counter() - t
                if proc.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
            spec = json.dumps(
                {
                    "bundle": str(paths[kind]),
                    "configs": configs,
                    "images": str(paths[fmt]),
                    "out": str(work / "out" / f"{task}_{backend}_{fmt}"),
                    "overrides": overrides,
                    "t0": time.time(),
                }
            )
            row.update(_run_child(["--child", "bundle", "--spec", spec]))
            row["load"] = os.getloadavg()[0]
            rows.append(row)
            print(f"  {task} {backend} {fmt}: {row['total_s']:.1f} s (uptime load {row['load']:.2f})", flush=True)
    return rows


def print_bundle_table(rows: list[dict[str, Any]], overrides: dict[str, Any]) -> None:
    n = rows[0]["images"] if rows else 0
    note = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the bundle defaults"
    print(f"\n## End to end: bundles/<task>/configs/inference.json on {n} real-size ultrasound images ({note})\n")
    print("backend pytorch = inference.json; onnx = inference.json + inference_onnx.json (ONNX Runtime)\n")
    print(
        "| task | backend | input | `monai.bundle run` wall (s) | instrumented total (s) | start-up (s) | loading + preprocessing (s) | model (s) | post + write (s) | ms/image after start-up | threads | load avg |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cli = f"{r['cli_wall_s']:.1f}" if "cli_wall_s" in r else "-"
        per = (r["total_s"] - r["startup_s"]) / max(r["images"], 1) * 1e3
        print(
            f"| {r['task']} | {r['backend']} | {r['format']} | {cli} | {r['total_s']:.1f} | {r['startup_s']:.1f} | {r['data_s']:.1f} | "
            f"{r['model_s']:.1f} | {r['post_s']:.1f} | {per:.0f} | {r['threads']} | {r['load']:.2f} |"
        )


# -------------------------------------------------------------------------------------------------- main


def _child(args: argparse.Namespace) -> None:
    if args.child == "prepare":
        result = prepare_artifacts(Path(args.work))
    elif args.child == "measure":
        s = json.loads(args.spec)
        result = measure_variant(Path(args.work), s["model"], s["kind"], s["backend"], s["cfg"], s["threads"])
    else:
        s = json.loads(args.spec)
        result = instrumented_run(
            Path(s["bundle"]), s["configs"], Path(s["images"]), Path(s["out"]), s["t0"], s["overrides"]
        )
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer runs and 20 images (~3 min)")
    mode.add_argument("--full", action="store_true", help="more runs, batch 16 too")
    parser.add_argument(
        "--threads", type=int, default=0, help="intra-op threads for torch and ORT (default: physical cores)"
    )
    parser.add_argument("--skip-models", action="store_true", help="only the end-to-end bundle table")
    parser.add_argument("--skip-bundles", action="store_true", help="only the per-model tables")
    parser.add_argument("--no-cli", action="store_true", help="skip the real `monai.bundle run` wall-time runs")
    parser.add_argument(
        "--bundle-backends",
        nargs="+",
        default=["pytorch", "onnx"],
        choices=sorted(BUNDLE_CONFIGS),
        help="end-to-end runs: inference.json (pytorch) and/or + inference_onnx.json (onnx)",
    )
    parser.add_argument("--images", type=int, default=0, help="number of real-size images (default: profile's)")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="bundle config override for the end-to-end runs, e.g. batch_size=1 (repeatable)",
    )
    parser.add_argument(
        "--bundles-dir",
        default=str(REPO / "bundles"),
        help="where the task bundles' configs come from (e.g. an older copy, for before/after)",
    )
    parser.add_argument("--work", default="", help="work folder (default: a temporary one)")
    parser.add_argument("--json", default="", help="also write all numbers to this JSON file")
    parser.add_argument("--child", choices=("prepare", "measure", "bundle"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    from tinyusfm_monai.deploy import physical_cores

    profile = "quick" if args.quick else "full" if args.full else "default"
    cfg = dict(PROFILES[profile])
    threads = args.threads or physical_cores()
    overrides = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.override)}
    print(f"# TinyUSFM vs USFM CPU inference benchmark ({profile} profile)\n")
    print(machine_description(threads))
    start = time.perf_counter()
    results: dict[str, Any] = {"profile": profile, "threads": threads}
    with tempfile.TemporaryDirectory(prefix="tinyusfm_bench_") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not args.skip_models:
            results["models"] = model_tables(cfg, threads, work)
        if not args.skip_bundles:
            print(
                f"\nwriting {args.images or cfg['images']} real-size ultrasound images and bundle copies ...",
                flush=True,
            )
            onnx = "onnx" in args.bundle_backends
            paths = prepare_bundles(work, args.images or cfg["images"], Path(args.bundles_dir), onnx)
            results["bundles"] = bundle_tables(paths, work, overrides, not args.no_cli, args.bundle_backends)
    if "models" in results:
        print_model_tables(results["models"], cfg)
    if "bundles" in results:
        print_bundle_table(results["bundles"], overrides)
    print(
        f"\nbenchmark wall time {time.perf_counter() - start:.0f} s; load average at end: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
